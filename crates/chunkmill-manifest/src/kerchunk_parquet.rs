//! kerchunk Parquet references, written and read, in the layout of fsspec's
//! `LazyReferenceMapper` (what `kerchunk.df.refs_to_dataframe` and VirtualiZarr write):
//!
//! ```text
//! refs.parq/                 the output is a directory
//!   .zmetadata               {"metadata": {".zgroup": {…}, "air/.zarray": {…}, …}, "record_size": N}
//!   air/refs.0.parq          chunks 0 .. N-1 of `air`, in C order of its chunk grid
//!   air/refs.1.parq          chunks N .. 2N-1, …
//!   g/sst/refs.0.parq        arrays in groups keep their key as the directory
//! ```
//!
//! Chunk `n` (flat C-order index of the chunk grid) is row `n % record_size` of
//! `refs.<n / record_size>.parq`. Every file holds `record_size` rows (the last one padded
//! with missing rows), with the columns
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `path` | optional UTF-8 string | the URL of a reference |
//! | `offset` | int64 | first byte (0 when not a reference) |
//! | `size` | int64 | number of bytes (0 when not a reference) |
//! | `raw` | optional bytes | the stored bytes of an inlined chunk |
//!
//! `raw` set: inlined; `path` set: a byte-range reference; both null: a missing chunk (the
//! fill value). Files are zstd-compressed as fsspec writes them. The `.zmetadata` documents
//! are the same as in [`kerchunk`](crate::kerchunk) JSON, as JSON objects instead of strings.
//! xarray opens the directory through fsspec (which needs `fastparquet` or `pyarrow`):
//!
//! ```python
//! fs = fsspec.filesystem("reference", fo="refs.parq")
//! xr.open_dataset(fs.get_mapper(), engine="zarr", consolidated=False)
//! ```
//!
//! The writer fills a temporary directory next to the output and renames it into place. The
//! reader also reads files written by fsspec (categorical, dictionary-encoded `path`;
//! `offset`/`size` as int32 or int64, nullable or not); a record file that does not exist
//! means that all its chunks are missing, as fsspec reads it. Whole-file references (a path
//! with offset and size 0) are refused, as in the JSON reader.
//!
//! This is the one module that uses the `parquet` crate.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{ByteArray, ByteArrayType, DataType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnPath;
use serde_json::{Map, Value};

use crate::array::{ManifestArray, VirtualDataset};
use crate::atomic::write_dir_atomic;
use crate::error::{Error, Result};
use crate::kerchunk::{array_documents, array_metadata, group_documents, quote_non_finite};
use crate::manifest::{ChunkEntry, ChunkManifest};

/// Chunks per Parquet file unless told otherwise (as `kerchunk.df.refs_to_dataframe` and
/// VirtualiZarr default to).
pub const DEFAULT_RECORD_SIZE: usize = 100_000;

/// The name of the metadata document in the output directory.
pub const ZMETADATA: &str = ".zmetadata";

const SCHEMA: &str = "message schema {
    optional binary path (STRING);
    required int64 offset;
    required int64 size;
    optional binary raw;
}";

/// Whether `dir` looks like kerchunk Parquet references: a directory whose `.zmetadata`
/// has a `record_size` (a consolidated Zarr v2 store has `.zmetadata` too, without one).
pub fn is_kerchunk_parquet(dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(dir.join(ZMETADATA)) else {
        return false;
    };
    serde_json::from_str::<Value>(&quote_non_finite(&text))
        .ok()
        .is_some_and(|v| v.get("record_size").is_some_and(Value::is_u64))
}

/// Writes `ds` as kerchunk Parquet references into the directory `dir`, `record_size`
/// chunks per file, atomically: on any error nothing is left at `dir` (and with `overwrite`,
/// what was there is kept). Returns the bytes written.
///
/// # Errors
/// [`Error::OutputExists`] unless `overwrite`; [`Error::Usage`] for a `record_size` of 0;
/// [`Error::Write`] naming the file that could not be written.
pub fn write_kerchunk_parquet(
    ds: &VirtualDataset,
    dir: &Path,
    record_size: usize,
    overwrite: bool,
) -> Result<u64> {
    if record_size == 0 {
        return Err(Error::Usage("the record size must be at least 1".into()));
    }
    write_dir_atomic(dir, overwrite, |tmp| {
        let mut written = 0;
        let schema = Arc::new(parse_message_type(SCHEMA).map_err(|e| Error::Write {
            path: dir.to_path_buf(),
            source: io::Error::other(e),
        })?);
        let properties = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::ZSTD(Default::default()))
                .set_statistics_enabled(EnabledStatistics::None)
                .set_column_dictionary_enabled(ColumnPath::from("offset"), false)
                .set_column_dictionary_enabled(ColumnPath::from("size"), false)
                .set_column_dictionary_enabled(ColumnPath::from("raw"), false)
                .set_key_value_metadata(Some(vec![KeyValue::new(
                    "pandas".to_string(),
                    pandas_metadata(),
                )]))
                .build(),
        );
        // One shared buffer per URL: a row holds a reference to it, not a copy.
        let urls: Vec<ByteArray> = ds
            .urls
            .iter()
            .map(|u| ByteArray::from(u.as_bytes().to_vec()))
            .collect();
        for (key, array) in &ds.arrays {
            let n = array.manifest.len();
            if n == 0 {
                continue;
            }
            let array_dir = tmp.join(key);
            fs::create_dir_all(&array_dir).map_err(|source| Error::Write {
                path: dir.join(key),
                source,
            })?;
            for record in 0..n.div_ceil(record_size) {
                let name = format!("refs.{record}.parq");
                let rows = Rows::of(
                    key,
                    array,
                    &urls,
                    record * record_size..((record + 1) * record_size).min(n),
                    record_size,
                )?;
                written += rows
                    .write(&array_dir.join(&name), schema.clone(), properties.clone())
                    .map_err(|source| Error::Write {
                        path: dir.join(key).join(&name),
                        source,
                    })?;
            }
        }
        let zmetadata = zmetadata_text(ds, record_size);
        let path = tmp.join(ZMETADATA);
        fs::write(&path, zmetadata.as_bytes())
            .and_then(|()| File::open(&path)?.sync_all())
            .map_err(|source| Error::Write {
                path: dir.join(ZMETADATA),
                source,
            })?;
        Ok(written + zmetadata.len() as u64)
    })
}

/// The `pandas` key of the file metadata: the column types pandas gives the columns when
/// fsspec reads a file (`pd.read_parquet`). Without it fastparquet reads `offset` and `size`
/// as nullable integers, which become floats in fsspec's hands.
fn pandas_metadata() -> String {
    let column = |name: &str, pandas: &str, numpy: &str| {
        serde_json::json!({
            "name": name, "field_name": name, "pandas_type": pandas, "numpy_type": numpy,
            "metadata": null,
        })
    };
    serde_json::json!({
        "index_columns": [],
        "column_indexes": [],
        "partition_columns": [],
        "columns": [
            column("path", "unicode", "object"),
            column("offset", "int64", "int64"),
            column("size", "int64", "int64"),
            column("raw", "bytes", "object"),
        ],
        "creator": {"library": "chunkmill", "version": env!("CARGO_PKG_VERSION")},
    })
    .to_string()
}

/// `.zmetadata`: every metadata document as a JSON object (the `.zattrs` texts may hold
/// bare `NaN`, which Python's `json` reads), and the record size.
fn zmetadata_text(ds: &VirtualDataset, record_size: usize) -> String {
    let mut docs = group_documents(ds);
    for (key, array) in &ds.arrays {
        docs.extend(array_documents(key, array));
    }
    let mut out = String::from("{\"metadata\":{");
    for (i, (key, text)) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str(",\n");
        }
        out.push_str(&Value::String(key.clone()).to_string());
        out.push(':');
        out.push_str(text);
    }
    out.push_str(&format!("}},\"record_size\":{record_size}}}\n"));
    out
}

/// The columns of one record file, ready for the column writers.
struct Rows {
    paths: Vec<ByteArray>,
    path_levels: Vec<i16>,
    offsets: Vec<i64>,
    sizes: Vec<i64>,
    raws: Vec<ByteArray>,
    raw_levels: Vec<i16>,
}

impl Rows {
    /// Chunks `range` of `array`, padded with missing rows up to `record_size`.
    fn of(
        key: &str,
        array: &ManifestArray,
        urls: &[ByteArray],
        range: std::ops::Range<usize>,
        record_size: usize,
    ) -> Result<Self> {
        let mut rows = Rows {
            paths: Vec::new(),
            path_levels: Vec::with_capacity(record_size),
            offsets: Vec::with_capacity(record_size),
            sizes: Vec::with_capacity(record_size),
            raws: Vec::new(),
            raw_levels: Vec::with_capacity(record_size),
        };
        let too_large = |what: &str, v: u64| {
            Error::Manifest(format!("{key}: {what} {v} does not fit in a Parquet int64"))
        };
        for flat in range {
            match array.manifest.get(flat) {
                Some(ChunkEntry::Reference {
                    path_id,
                    offset,
                    length,
                }) => {
                    let url = urls.get(path_id as usize).ok_or_else(|| {
                        Error::Manifest(format!("{key}: path id {path_id} has no URL"))
                    })?;
                    rows.paths.push(url.clone());
                    rows.path_levels.push(1);
                    rows.offsets
                        .push(i64::try_from(offset).map_err(|_| too_large("offset", offset))?);
                    rows.sizes
                        .push(i64::try_from(length).map_err(|_| too_large("length", length))?);
                    rows.raw_levels.push(0);
                }
                Some(ChunkEntry::Inlined(bytes)) => {
                    rows.path_levels.push(0);
                    rows.offsets.push(0);
                    rows.sizes.push(0);
                    rows.raws.push(ByteArray::from(bytes.to_vec()));
                    rows.raw_levels.push(1);
                }
                Some(ChunkEntry::Missing) | None => rows.push_missing(),
            }
        }
        while rows.offsets.len() < record_size {
            rows.push_missing();
        }
        Ok(rows)
    }

    fn push_missing(&mut self) {
        self.path_levels.push(0);
        self.offsets.push(0);
        self.sizes.push(0);
        self.raw_levels.push(0);
    }

    /// Writes the file at `path` and syncs it; returns its size.
    fn write(
        &self,
        path: &Path,
        schema: Arc<parquet::schema::types::Type>,
        properties: Arc<WriterProperties>,
    ) -> io::Result<u64> {
        let file = File::create(path)?;
        let mut writer =
            SerializedFileWriter::new(&file, schema, properties).map_err(io::Error::other)?;
        let mut group = writer.next_row_group().map_err(io::Error::other)?;
        let mut column = 0;
        while let Some(mut c) = group.next_column().map_err(io::Error::other)? {
            let written = match column {
                0 => c.typed::<ByteArrayType>().write_batch(
                    &self.paths,
                    Some(&self.path_levels),
                    None,
                ),
                1 => c
                    .typed::<Int64Type>()
                    .write_batch(&self.offsets, None, None),
                2 => c.typed::<Int64Type>().write_batch(&self.sizes, None, None),
                _ => {
                    c.typed::<ByteArrayType>()
                        .write_batch(&self.raws, Some(&self.raw_levels), None)
                }
            };
            written.map_err(io::Error::other)?;
            c.close().map_err(io::Error::other)?;
            column += 1;
        }
        group.close().map_err(io::Error::other)?;
        writer.close().map_err(io::Error::other)?;
        file.sync_all()?;
        Ok(file.metadata()?.len())
    }
}

/// Reads kerchunk Parquet references from the directory `dir` into a dataset named after it.
///
/// # Errors
/// [`Error::Reference`] naming the file (and the variable) for a `.zmetadata` that is missing
/// or not JSON, metadata that does not describe an array, a Parquet file that cannot be
/// decoded or lacks a column, or a whole-file reference.
pub fn read_kerchunk_parquet(dir: &Path) -> Result<VirtualDataset> {
    let name = dir.display().to_string();
    let zpath = dir.join(ZMETADATA);
    let bad_meta = |reason: String| Error::Reference {
        path: zpath.display().to_string(),
        reason,
    };
    let text = fs::read_to_string(&zpath).map_err(|e| bad_meta(format!("cannot read: {e}")))?;
    let top: Value = serde_json::from_str(&quote_non_finite(&text))
        .map_err(|e| bad_meta(format!("not JSON: {e}")))?;
    let record_size = top
        .get("record_size")
        .and_then(Value::as_u64)
        .and_then(|r| usize::try_from(r).ok())
        .filter(|&r| r > 0)
        .ok_or_else(|| bad_meta("no record_size (a positive integer)".into()))?;
    let metadata = top
        .get("metadata")
        .and_then(Value::as_object)
        .ok_or_else(|| bad_meta("no metadata object".into()))?;

    let mut groups: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut zarrays: BTreeMap<String, Value> = BTreeMap::new();
    let mut zattrs: BTreeMap<String, Value> = BTreeMap::new();
    for (key, v) in metadata {
        // fsspec stores objects; accept JSON text too.
        let v = match v {
            Value::String(s) => serde_json::from_str(&quote_non_finite(s))
                .map_err(|e| bad_meta(format!("{key}: not JSON: {e}")))?,
            other => other.clone(),
        };
        let (prefix, leaf) = match key.rsplit_once('/') {
            Some((p, l)) => (p.to_string(), l),
            None => (String::new(), key.as_str()),
        };
        match leaf {
            ".zgroup" => {
                groups.entry(prefix).or_default();
            }
            ".zarray" => {
                zarrays.insert(prefix, v);
            }
            ".zattrs" => {
                zattrs.insert(prefix, v);
            }
            _ => {}
        }
    }
    for (prefix, attrs) in &zattrs {
        if let (Some(g), Some(a)) = (groups.get_mut(prefix), attrs.as_object()) {
            g.clone_from(a);
        }
    }
    groups.entry(String::new()).or_default();

    let mut urls = UrlTable::default();
    let mut arrays = BTreeMap::new();
    for (key, zarray) in zarrays {
        let attrs = zattrs
            .get(&key)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let metadata = array_metadata(&key, &zarray, attrs).map_err(bad_meta)?;
        let mut manifest = ChunkManifest::new(metadata.grid_shape())?;
        let n = manifest.len();
        for record in 0..n.div_ceil(record_size) {
            let path = dir.join(&key).join(format!("refs.{record}.parq"));
            let first = record * record_size;
            let rows = (n - first).min(record_size);
            read_record(&path, &key, first, rows, &mut manifest, &mut urls)?;
        }
        arrays.insert(key, ManifestArray { metadata, manifest });
    }
    Ok(VirtualDataset {
        name,
        urls: urls.urls,
        groups,
        arrays,
        encodings: BTreeMap::new(),
    })
}

/// URLs by first appearance, each once.
#[derive(Default)]
struct UrlTable {
    urls: Vec<String>,
    ids: HashMap<String, u32>,
}

impl UrlTable {
    fn id(&mut self, url: &str) -> Option<u32> {
        if let Some(&id) = self.ids.get(url) {
            return Some(id);
        }
        let id = u32::try_from(self.urls.len())
            .ok()
            .filter(|&id| id <= crate::manifest::MAX_PATH_ID)?;
        self.ids.insert(url.to_string(), id);
        self.urls.push(url.to_string());
        Some(id)
    }
}

/// Reads the first `rows` rows of one record file into chunks `first..first + rows` of
/// `manifest`. A file that does not exist leaves them missing.
fn read_record(
    path: &Path,
    key: &str,
    first: usize,
    rows: usize,
    manifest: &mut ChunkManifest,
    urls: &mut UrlTable,
) -> Result<()> {
    let bad = |reason: String| Error::Reference {
        path: path.display().to_string(),
        reason: format!("{key}: {reason}"),
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(bad(format!("cannot open: {e}"))),
    };
    let columns = read_columns(file).map_err(bad)?;
    let have = columns.offsets.len();
    if have < rows {
        return Err(bad(format!(
            "holds {have} rows, the chunk grid needs {rows} from this file"
        )));
    }
    for row in 0..rows {
        let flat = first + row;
        if let Some(Some(raw)) = columns.raws.get(row) {
            manifest.set_inlined(flat, raw.clone())?;
            continue;
        }
        let Some(Some(url)) = columns.paths.get(row) else {
            continue;
        };
        let (offset, size) = (columns.offsets[row], columns.sizes[row]);
        if offset == 0 && size == 0 {
            return Err(bad(format!(
                "chunk {flat}: whole-file references are not supported"
            )));
        }
        let (Ok(offset), Ok(size)) = (u64::try_from(offset), u64::try_from(size)) else {
            return Err(bad(format!(
                "chunk {flat}: negative offset {offset} or size {size}"
            )));
        };
        let url = std::str::from_utf8(url)
            .map_err(|_| bad(format!("chunk {flat}: the path is not UTF-8")))?;
        let id = urls
            .id(url)
            .ok_or_else(|| bad("too many URLs for 32-bit path ids".into()))?;
        manifest.set_reference(flat, id, offset, size)?;
    }
    Ok(())
}

/// The four columns of a record file; `paths` and `raws` may be shorter than the others when
/// a writer left one out (fsspec reads an absent column as all null).
struct Columns {
    paths: Vec<Option<Vec<u8>>>,
    offsets: Vec<i64>,
    sizes: Vec<i64>,
    raws: Vec<Option<Vec<u8>>>,
}

fn read_columns(file: File) -> std::result::Result<Columns, String> {
    let reader = SerializedFileReader::new(file).map_err(|e| format!("not Parquet: {e}"))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let index = |name: &str| {
        schema
            .columns()
            .iter()
            .position(|c| c.path().parts() == [name])
    };
    let (Some(offset_col), Some(size_col)) = (index("offset"), index("size")) else {
        return Err("no `offset` or `size` column".into());
    };
    let (path_col, raw_col) = (index("path"), index("raw"));
    if path_col.is_none() && raw_col.is_none() {
        return Err("neither a `path` nor a `raw` column".into());
    }
    let mut out = Columns {
        paths: Vec::new(),
        offsets: Vec::new(),
        sizes: Vec::new(),
        raws: Vec::new(),
    };
    for g in 0..reader.num_row_groups() {
        let group = reader
            .get_row_group(g)
            .map_err(|e| format!("row group {g}: {e}"))?;
        let column = |i: usize| {
            group
                .get_column_reader(i)
                .map_err(|e| format!("row group {g}, column {i}: {e}"))
        };
        let rows = usize::try_from(group.metadata().num_rows()).unwrap_or(0);
        out.offsets
            .extend(read_ints(column(offset_col)?).map_err(|e| format!("offset: {e}"))?);
        out.sizes
            .extend(read_ints(column(size_col)?).map_err(|e| format!("size: {e}"))?);
        match path_col {
            Some(i) => out
                .paths
                .extend(read_bytes(column(i)?).map_err(|e| format!("path: {e}"))?),
            None => out.paths.resize(out.paths.len() + rows, None),
        }
        match raw_col {
            Some(i) => out
                .raws
                .extend(read_bytes(column(i)?).map_err(|e| format!("raw: {e}"))?),
            None => out.raws.resize(out.raws.len() + rows, None),
        }
    }
    if out.sizes.len() != out.offsets.len()
        || out.paths.len() != out.offsets.len()
        || out.raws.len() != out.offsets.len()
    {
        return Err("columns of different lengths".into());
    }
    Ok(out)
}

/// Every value of one column, `None` for nulls.
fn read_all<T: DataType>(
    mut reader: ColumnReaderImpl<T>,
) -> std::result::Result<Vec<Option<T::T>>, String>
where
    T::T: Clone,
{
    let mut out = Vec::new();
    loop {
        let mut levels = Vec::new();
        let mut values = Vec::new();
        let (records, _, _) = reader
            .read_records(65_536, Some(&mut levels), None, &mut values)
            .map_err(|e| e.to_string())?;
        if records == 0 {
            break;
        }
        if levels.is_empty() {
            // A required column: one value per record.
            out.extend(values.into_iter().map(Some));
        } else {
            let mut values = values.into_iter();
            for level in levels {
                out.push(if level > 0 { values.next() } else { None });
            }
        }
    }
    Ok(out)
}

fn read_ints(column: ColumnReader) -> std::result::Result<Vec<i64>, String> {
    Ok(match column {
        ColumnReader::Int64ColumnReader(r) => {
            read_all(r)?.into_iter().map(|v| v.unwrap_or(0)).collect()
        }
        ColumnReader::Int32ColumnReader(r) => read_all(r)?
            .into_iter()
            .map(|v| i64::from(v.unwrap_or(0)))
            .collect(),
        _ => return Err("not an integer column".into()),
    })
}

fn read_bytes(column: ColumnReader) -> std::result::Result<Vec<Option<Vec<u8>>>, String> {
    match column {
        ColumnReader::ByteArrayColumnReader(r) => Ok(read_all(r)?
            .into_iter()
            .map(|v| v.map(|b| b.data().to_vec()))
            .collect()),
        _ => Err("not a byte-array column".into()),
    }
}

/// Where the record files of array `key` are, for tests and tools.
pub fn record_path(dir: &Path, key: &str, record: usize) -> PathBuf {
    dir.join(key).join(format!("refs.{record}.parq"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::ArrayMetadata;
    use crate::codecs::Codec;

    fn dataset(grid: u64) -> Result<VirtualDataset> {
        let mut attributes = Map::new();
        attributes.insert("units".into(), Value::from("K"));
        attributes.insert("_FillValue".into(), Value::from("NaN"));
        attributes.insert("missing_value".into(), Value::from("NaN"));
        let metadata = ArrayMetadata {
            shape: vec![grid * 2, 3],
            dtype: "<f4".into(),
            chunk_shape: vec![2, 3],
            fill_value: Value::from("NaN"),
            codecs: vec![Codec::bytes(Some(chunkmill_hdf5::ByteOrder::Little))],
            dimension_names: vec!["time".into(), "x".into()],
            attributes,
            attribute_types: BTreeMap::new(),
        };
        let mut manifest = ChunkManifest::new(vec![grid, 1])?;
        for i in 0..manifest.len() {
            match i % 5 {
                0 => manifest.set_inlined(i, vec![i as u8; 1 + i % 7])?,
                1 => {}
                _ => manifest.set_reference(i, (i % 3) as u32, 1000 * i as u64, 24)?,
            }
        }
        let mut groups = BTreeMap::new();
        let mut root = Map::new();
        root.insert("title".into(), Value::from("round trip"));
        groups.insert(String::new(), root);
        groups.insert("g".into(), Map::new());
        let scalar = ArrayMetadata {
            shape: vec![],
            dtype: "<i4".into(),
            chunk_shape: vec![],
            fill_value: Value::from(0),
            codecs: vec![Codec::bytes(Some(chunkmill_hdf5::ByteOrder::Little))],
            dimension_names: vec![],
            // Kept through Zarr v2: the `.zarray` fill value is the `_FillValue` attribute.
            attributes: [("_FillValue".to_string(), Value::from(0))]
                .into_iter()
                .collect(),
            attribute_types: BTreeMap::new(),
        };
        let mut scalar_manifest = ChunkManifest::new(vec![])?;
        scalar_manifest.set_inlined(0, 7i32.to_le_bytes().to_vec())?;
        let mut arrays = BTreeMap::new();
        arrays.insert("g/air".to_string(), ManifestArray { metadata, manifest });
        arrays.insert(
            "crs".to_string(),
            ManifestArray {
                metadata: scalar,
                manifest: scalar_manifest,
            },
        );
        Ok(VirtualDataset {
            name: "mem".into(),
            urls: vec![
                "/data/a.nc".into(),
                "s3://bucket/b.nc".into(),
                "/data/ünïcode c.nc".into(),
            ],
            groups,
            arrays,
            encodings: BTreeMap::new(),
        })
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("chunkmill-parquet-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// The same chunks, whatever the URL numbering.
    fn assert_same(a: &VirtualDataset, b: &VirtualDataset) {
        assert_eq!(
            a.arrays.keys().collect::<Vec<_>>(),
            b.arrays.keys().collect::<Vec<_>>()
        );
        for (key, x) in &a.arrays {
            let y = &b.arrays[key];
            assert_eq!(x.metadata, y.metadata, "{key}");
            assert_eq!(x.manifest.grid_shape(), y.manifest.grid_shape(), "{key}");
            for ((_, p), (_, q)) in x.manifest.iter().zip(y.manifest.iter()) {
                match (p, q) {
                    (
                        ChunkEntry::Reference {
                            path_id: i,
                            offset: o1,
                            length: l1,
                        },
                        ChunkEntry::Reference {
                            path_id: j,
                            offset: o2,
                            length: l2,
                        },
                    ) => assert_eq!((&a.urls[i as usize], o1, l1), (&b.urls[j as usize], o2, l2)),
                    (p, q) => assert_eq!(p, q, "{key}"),
                }
            }
        }
        assert_eq!(a.groups, b.groups);
    }

    #[test]
    fn round_trip_over_several_record_files() -> std::result::Result<(), Box<dyn std::error::Error>>
    {
        let ds = dataset(23)?;
        let dir = temp_dir("round-trip");
        let bytes = write_kerchunk_parquet(&ds, &dir, 5, false)?;
        assert!(bytes > 0);
        assert!(is_kerchunk_parquet(&dir));
        // 23 chunks, 5 per file: 5 files, the last padded.
        for record in 0..5 {
            assert!(record_path(&dir, "g/air", record).is_file(), "{record}");
        }
        assert!(!record_path(&dir, "g/air", 5).exists());
        assert!(record_path(&dir, "crs", 0).is_file());
        let back = read_kerchunk_parquet(&dir)?;
        assert_same(&ds, &back);
        assert_eq!(
            back.arrays["g/air"].manifest.counts(),
            ds.arrays["g/air"].manifest.counts()
        );
        let top: Value =
            serde_json::from_str(&quote_non_finite(&fs::read_to_string(dir.join(ZMETADATA))?))?;
        assert_eq!(top["record_size"], 5);
        assert_eq!(top["metadata"][".zgroup"]["zarr_format"], 2);
        assert_eq!(
            top["metadata"]["g/air/.zattrs"]["_ARRAY_DIMENSIONS"],
            serde_json::json!(["time", "x"])
        );
        assert_eq!(top["metadata"]["g/air/.zarray"]["fill_value"], "NaN");
        fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn record_files_hold_record_size_rows_in_c_order(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let ds = dataset(12)?;
        let dir = temp_dir("rows");
        write_kerchunk_parquet(&ds, &dir, 5, false)?;
        let columns = read_columns(File::open(record_path(&dir, "g/air", 2))?)?;
        assert_eq!(columns.offsets.len(), 5);
        // Chunks 10 (inlined), 11 (missing), then padding.
        assert_eq!(columns.raws[0].as_deref(), Some(&[10u8, 10, 10, 10][..]));
        assert_eq!(columns.paths[0], None);
        assert_eq!(
            (columns.paths[1].as_ref(), columns.raws[1].as_ref()),
            (None, None)
        );
        assert!(columns.paths[2..].iter().all(Option::is_none));
        let first = read_columns(File::open(record_path(&dir, "g/air", 0))?)?;
        assert_eq!(
            first.paths[2].as_deref(),
            Some("/data/ünïcode c.nc".as_bytes())
        );
        assert_eq!((first.offsets[2], first.sizes[2]), (2000, 24));
        fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn existing_output_is_refused_unless_overwrite(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let ds = dataset(3)?;
        let dir = temp_dir("exists");
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("keep"), "me")?;
        let err = write_kerchunk_parquet(&ds, &dir, 10, false);
        assert!(matches!(err, Err(Error::OutputExists { .. })));
        assert!(dir.join("keep").is_file());
        write_kerchunk_parquet(&ds, &dir, 10, true)?;
        assert!(!dir.join("keep").exists());
        assert_same(&ds, &read_kerchunk_parquet(&dir)?);
        let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        let leftovers = fs::read_dir(&parent)?
            .filter_map(std::result::Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .contains("chunkmill-parquet-exists.tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
        assert!(write_kerchunk_parquet(&ds, &dir, 0, true).is_err());
        fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn broken_inputs_are_named() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let ds = dataset(4)?;
        let dir = temp_dir("broken");
        write_kerchunk_parquet(&ds, &dir, 100, false)?;
        fs::write(record_path(&dir, "g/air", 0), b"PAR1 not really")?;
        let err = read_kerchunk_parquet(&dir).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains("refs.0.parq") && err.contains("g/air"),
            "{err}"
        );
        // A missing record file: its chunks are missing.
        fs::remove_file(record_path(&dir, "g/air", 0))?;
        let back = read_kerchunk_parquet(&dir)?;
        assert_eq!(back.arrays["g/air"].manifest.counts(), (0, 0, 4));
        fs::write(dir.join(ZMETADATA), "{\"metadata\":{}}")?;
        assert!(!is_kerchunk_parquet(&dir));
        let err = read_kerchunk_parquet(&dir).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("record_size")));
        fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
