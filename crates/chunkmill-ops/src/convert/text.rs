//! A file's text, turned into the Zarr arrays `xr.open_dataset(f).to_zarr()` writes, so that
//! `xr.open_zarr(cache)` reads what `xr.open_dataset(f)` reads:
//!
//! * a **character array** (NetCDF `char`, numpy `|S1`, with the string length as its last
//!   dimension) is one fixed-length byte string per element along the other dimensions:
//!   `|S{n}` (v3 `null_terminated_bytes`), as xarray's `CharacterArrayCoder` stacks it. Its
//!   `_Encoding` attribute stays, so xarray decodes it to `str` from the cache as from the
//!   file. The bytes are the same in the same order, so the chunks are still read by
//!   reference: only the metadata changes.
//! * a **variable-length string** (NetCDF-4 `string`, an HDF5 variable-length string, held
//!   inline as `vlen-utf8` since nothing else reads HDF5's heap layout) is fixed-length
//!   unicode as wide as its longest element, `<U{n}` (v3 `fixed_length_utf32`): what xarray's
//!   netCDF4 backend decodes (`astype(str)`) and then stores. The width is counted in code
//!   points over every input, so the array is planned at its real size.
//!
//! Fixed-length HDF5 strings of more than one byte (`|S10`, written by h5py, not netCDF) stay
//! byte strings, as h5netcdf reads them.

use chunkmill_manifest::codecs::{Codec, VLEN_UTF8};
use chunkmill_manifest::{ChunkEntry, ChunkManifest, ManifestArray, VirtualDataset};
use serde_json::Value;

/// What becomes of one array.
enum Text {
    /// Not text, or text that is copied as it is.
    Unchanged,
    /// Text in the form xarray stores.
    Converted(Box<ManifestArray>),
    /// Text this conversion cannot express, and why; refused only when chosen.
    Unconvertible(String),
}

/// Every character array and variable-length string of `dataset` in the form xarray stores
/// it (see the module). Arrays that cannot be are left as they are, and
/// [`why_unconvertible`] says why when the job chooses one.
pub(super) fn as_stored_by_xarray(dataset: &mut VirtualDataset) {
    let converted: Vec<(String, ManifestArray)> = dataset
        .arrays
        .iter()
        .filter_map(|(key, array)| match text_form(array) {
            Text::Converted(new) => Some((key.clone(), *new)),
            Text::Unchanged | Text::Unconvertible(_) => None,
        })
        .collect();
    dataset.arrays.extend(converted);
}

/// Why `array`, text left as it was by [`as_stored_by_xarray`], cannot be converted.
pub(super) fn why_unconvertible(array: &ManifestArray) -> Option<String> {
    match text_form(array) {
        Text::Unconvertible(why) => Some(why),
        Text::Unchanged | Text::Converted(_) => None,
    }
}

fn text_form(array: &ManifestArray) -> Text {
    let meta = &array.metadata;
    if meta.dtype == "|S1" && !meta.shape.is_empty() {
        return stacked_characters(array);
    }
    if meta.dtype == "|O" && meta.codecs.iter().any(|c| c.name == VLEN_UTF8) {
        return fixed_width_unicode(array);
    }
    Text::Unchanged
}

/// `|S1` characters along the last axis as one `|S{n}` string per element of the others.
fn stacked_characters(array: &ManifestArray) -> Text {
    let meta = &array.metadata;
    let axis = meta.shape.len() - 1;
    let length = meta.shape[axis];
    let dim = meta.dimension_names.get(axis).cloned().unwrap_or_default();
    if length == 0 {
        return Text::Unconvertible(format!(
            "a character array whose string dimension {dim} is empty"
        ));
    }
    if meta.chunk_shape.get(axis) != Some(&length) {
        return Text::Unconvertible(format!(
            "a character array chunked along its string dimension {dim} ({} of {length} characters per chunk)",
            meta.chunk_shape.get(axis).copied().unwrap_or(0)
        ));
    }
    // A character fill other than NUL would fill each missing string with n copies of it,
    // which no Zarr fill value of the string says.
    if !matches!(&meta.fill_value, Value::Null) && meta.fill_value != Value::String(String::new()) {
        return Text::Unconvertible(format!(
            "a character array with the fill character {}",
            meta.fill_value
        ));
    }
    let mut new = array.clone();
    let m = &mut new.metadata;
    m.shape.pop();
    m.chunk_shape.pop();
    m.dimension_names.truncate(axis);
    m.dtype = format!("|S{length}");
    // Shuffle without an element size would take the new one; the stored bytes were
    // shuffled by single characters.
    for codec in &mut m.codecs {
        if codec.name == "numcodecs.shuffle" && !codec.configuration.contains_key("elementsize") {
            codec.configuration.insert("elementsize".into(), 1.into());
        }
    }
    let manifest = &array.manifest;
    let mut grid = manifest.grid_shape().to_vec();
    // One chunk along the string axis (checked above), so dropping it keeps every flat index.
    grid.pop();
    match ChunkManifest::from_arrays(
        grid,
        manifest.path_ids().to_vec(),
        manifest.offsets().to_vec(),
        manifest.lengths().to_vec(),
        manifest.inlined().clone(),
    ) {
        Ok(m) => new.manifest = m,
        Err(e) => return Text::Unconvertible(format!("its chunks cannot be regrouped: {e}")),
    }
    Text::Converted(Box::new(new))
}

/// Variable-length strings, held inline as `vlen-utf8`, as `<U{n}` (UTF-32, NUL-padded) with
/// `n` the most code points of any element (at least 1, as numpy's `astype(str)`).
fn fixed_width_unicode(array: &ManifestArray) -> Text {
    let meta = &array.metadata;
    if meta.codecs.len() != 1 {
        return Text::Unconvertible(format!(
            "variable-length strings encoded with {} codecs, not vlen-utf8 alone",
            meta.codecs.len()
        ));
    }
    let per_chunk: u64 = meta.chunk_shape.iter().product();
    // Only a chunk short along the first axis alone keeps C order when padded at its end.
    let short_ok = meta
        .chunk_shape
        .iter()
        .zip(&meta.shape)
        .skip(1)
        .all(|(c, s)| c == s);
    let mut chunks = Vec::new();
    for (flat, entry) in array.manifest.iter() {
        match entry {
            ChunkEntry::Missing => {}
            ChunkEntry::Inlined(bytes) => match decode_vlen_utf8(bytes, per_chunk, short_ok) {
                Ok(mut strings) => {
                    strings.resize(usize::try_from(per_chunk).unwrap_or(0), String::new());
                    chunks.push((flat, strings));
                }
                Err(why) => return Text::Unconvertible(why),
            },
            ChunkEntry::Reference { .. } => return Text::Unconvertible(
                "variable-length strings referenced in a file rather than held in the references"
                    .to_string(),
            ),
        }
    }
    let width = chunks
        .iter()
        .flat_map(|(_, strings)| strings.iter().map(|s| s.chars().count()))
        .max()
        .unwrap_or(0)
        .max(1);
    let mut inlined = std::collections::BTreeMap::new();
    for (flat, strings) in chunks {
        let mut bytes = Vec::with_capacity(strings.len() * width * 4);
        for s in strings {
            let start = bytes.len();
            bytes.extend(s.chars().flat_map(|c| u32::from(c).to_le_bytes()));
            bytes.resize(start + width * 4, 0);
        }
        inlined.insert(flat, bytes);
    }
    let manifest = &array.manifest;
    let path_ids: Vec<u32> = (0..manifest.len())
        .map(|flat| {
            if inlined.contains_key(&flat) {
                chunkmill_manifest::INLINED
            } else {
                chunkmill_manifest::MISSING
            }
        })
        .collect();
    let built = ChunkManifest::from_arrays(
        manifest.grid_shape().to_vec(),
        path_ids,
        vec![0; manifest.len()],
        vec![0; manifest.len()],
        inlined,
    );
    let mut new = array.clone();
    match built {
        Ok(m) => new.manifest = m,
        Err(e) => return Text::Unconvertible(format!("its strings cannot be regrouped: {e}")),
    }
    let m = &mut new.metadata;
    m.dtype = format!("<U{width}");
    m.fill_value = Value::String(String::new());
    m.codecs = vec![Codec {
        name: "bytes".into(),
        configuration: serde_json::Map::from_iter([("endian".into(), "little".into())]),
    }];
    Text::Converted(Box::new(new))
}

/// The strings of one `vlen-utf8` chunk (numcodecs' layout: a little-endian `u32` count, then
/// each item as a `u32` byte length and its UTF-8), which holds `elements` items, or fewer
/// when `short_ok`: an input's whole array joined as the last chunk along the first axis,
/// shorter than the others (the rest of the chunk lies past the array's end).
fn decode_vlen_utf8(bytes: &[u8], elements: u64, short_ok: bool) -> Result<Vec<String>, String> {
    let bad = |why: &str| format!("variable-length strings that do not decode: {why}");
    let mut rest = bytes;
    let mut take = |n: usize| -> Result<&[u8], String> {
        if rest.len() < n {
            return Err(bad("the chunk ends early"));
        }
        let (part, tail) = rest.split_at(n);
        rest = tail;
        Ok(part)
    };
    let as_u32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let count = as_u32(take(4)?);
    if u64::from(count) > elements || (u64::from(count) < elements && !short_ok) {
        return Err(bad(&format!("{count} items in a chunk of {elements}")));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = as_u32(take(4)?) as usize;
        let item = take(len)?;
        out.push(
            std::str::from_utf8(item)
                .map_err(|e| bad(&e.to_string()))?
                .to_string(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chunkmill_manifest::codecs::encode_vlen_utf8;

    #[test]
    fn vlen_utf8_chunks_decode_and_refuse_what_does_not_fit() -> Result<(), String> {
        let words = ["Zürich".to_string(), String::new(), "日本".to_string()];
        let bytes = encode_vlen_utf8(&words)?;
        assert_eq!(decode_vlen_utf8(&bytes, 3, false)?, words);
        // A last chunk along the first axis may hold fewer items than the nominal chunk.
        assert_eq!(decode_vlen_utf8(&bytes, 4, true)?, words);
        assert!(decode_vlen_utf8(&bytes, 4, false).is_err());
        assert!(decode_vlen_utf8(&bytes, 2, true).is_err());
        assert!(decode_vlen_utf8(&bytes[..bytes.len() - 1], 3, false).is_err());
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] = 0xff;
        assert!(decode_vlen_utf8(&bad, 3, false).is_err());
        Ok(())
    }
}
