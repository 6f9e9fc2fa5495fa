//! What a listing returns: groups, variables, dimensions, and the byte ranges of their data.
//!
//! These are plain data (all `Clone + Serialize`), the same for HDF5, NetCDF-4 and NetCDF-3.

use serde::Serialize;
use serde_json::Value;

use crate::format::Format;

/// Everything listed in one file, metadata only (no chunk ranges: ask
/// [`SourceFile::data_refs`](crate::SourceFile::data_refs) per variable).
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    /// Path or URL of the file.
    pub file: String,
    /// Its container format.
    pub format: Format,
    /// Whether it follows the NetCDF-4 conventions (`_NCProperties`, `_Netcdf4Dimid`, …).
    /// Always false for NetCDF-3.
    pub netcdf4: bool,
    /// Every group, root (`/`) first, then depth-first in name order.
    pub groups: Vec<GroupInfo>,
    /// Every data variable (dataset), depth-first in link-name order. NetCDF-4
    /// dimension-only datasets are not here but in `dimensions`.
    pub variables: Vec<Variable>,
    /// Dimensions: HDF5 dimension scales and NetCDF dimensions.
    pub dimensions: Vec<Dimension>,
    /// Objects that could not be listed, each with the reason (virtual datasets, external
    /// links, objects whose metadata the reader refused, …). Their siblings are listed.
    pub unlisted: Vec<Unlisted>,
}

impl Inventory {
    /// The variable at `path` (its path in the file, or any of its aliases).
    pub fn variable(&self, path: &str) -> Option<&Variable> {
        self.variables
            .iter()
            .find(|v| v.path == path || v.aliases.iter().any(|a| a == path))
    }

    /// The group at `path`.
    pub fn group(&self, path: &str) -> Option<&GroupInfo> {
        self.groups.iter().find(|g| g.path == path)
    }
}

/// A group and its attributes.
#[derive(Debug, Clone, Serialize)]
pub struct GroupInfo {
    /// Absolute path, `/` for the root.
    pub path: String,
    /// User attributes (see [`Variable::attributes`]).
    pub attributes: Vec<Attribute>,
    /// Bookkeeping attributes of HDF5 and NetCDF-4 (`_NCProperties`, …).
    pub internal_attributes: Vec<Attribute>,
    /// Other paths that lead to this same group (hard or soft links).
    pub aliases: Vec<String>,
}

/// One attribute, its value as JSON. Attributes are listed in stored order (creation order
/// for compact storage, name-hash order for dense storage).
///
/// Numbers are JSON numbers (NaN and the infinities are the strings `"NaN"`, `"Infinity"`,
/// `"-Infinity"`, as Zarr writes them); strings are strings; an attribute of one element is a
/// scalar, as netCDF4-python and xarray show it; more elements make an array (nested for
/// several dimensions); a compound is an object; opaque bytes are a hex string; an object
/// reference is the path of its target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attribute {
    /// Name.
    pub name: String,
    /// Value.
    pub value: Value,
    /// numpy's name of the stored element type when it is a number (`float32`, `int16`,
    /// `uint8`), so that readers can apply rules that depend on it — xarray's CF decoding
    /// unpacks into float32 only when `scale_factor`/`add_offset` are stored as float32.
    /// `None` for text, compounds and other non-numeric attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
}

/// Byte order of a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ByteOrder {
    /// Least significant byte first.
    Little,
    /// Most significant byte first (all NetCDF-3 data; some HDF5 data).
    Big,
    /// Single bytes, strings, opaque and compound types.
    NotApplicable,
}

/// An element type, described as numpy does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DType {
    /// numpy's type string (`dtype.str`): `<f4`, `>i2`, `|u1`, `|b1`, `|S10`, `|O` (variable
    /// length), `|V12` (compound, opaque, array).
    pub numpy: String,
    /// numpy's name: `float32`, `int16`, `bool`, `S10`, `object`, `V12`.
    pub name: String,
    /// Byte order of the stored values.
    pub byte_order: ByteOrder,
    /// Size of one stored element in bytes (for variable-length types, the size of the
    /// reference the file stores).
    pub size: usize,
    /// The HDF5 class: `integer`, `float`, `string`, `vlen_string`, `vlen`, `enum`, `bool`,
    /// `compound`, `array`, `opaque`, `reference`, `bitfield`, or for NetCDF-3 `char`.
    pub class: &'static str,
}

/// A member of a compound type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    /// Its name.
    pub name: String,
    /// Its first byte within the element.
    pub offset: usize,
    /// Its type.
    pub dtype: DType,
}

/// How the data of a variable is laid out in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Layout {
    /// One block of bytes, or nothing if never written.
    Contiguous,
    /// Bytes inside the object header.
    Compact,
    /// Chunks found through an index.
    Chunked {
        /// The kind of index.
        index: ChunkIndexKind,
    },
    /// NetCDF-3: the data starts at `data_offset`; a record variable repeats every
    /// `record_stride` bytes, one record per step of the unlimited dimension.
    NetCdf3 {
        /// Absolute offset of the first byte of the variable (of its first record).
        data_offset: u64,
        /// Bytes from one record of this variable to the next; `None` for a fixed-size
        /// variable.
        record_stride: Option<u64>,
        /// Bytes of this variable in one record (unpadded); for a fixed-size variable, its
        /// whole size.
        record_size: u64,
    },
}

/// The six HDF5 chunk indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkIndexKind {
    /// Version-1 B-tree (every file before HDF5 1.10's format, and `libver='earliest'`).
    #[serde(rename = "btree_v1")]
    BTreeV1,
    /// A dataset of one chunk.
    SingleChunk,
    /// Chunks in a row from one address, no index (early allocation, no filters).
    Implicit,
    /// Fixed array (no unlimited dimension).
    FixedArray,
    /// Extensible array (one unlimited dimension).
    ExtensibleArray,
    /// Version-2 B-tree (several unlimited dimensions).
    #[serde(rename = "btree_v2")]
    BTreeV2,
}

/// One filter of a variable's pipeline, in the order they are applied when writing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Filter {
    /// HDF5 filter id (1 deflate, 2 shuffle, 3 fletcher32, 4 szip, 5 nbit, 6 scaleoffset,
    /// 32000 lzf, 32001 blosc, 32004 lz4, 32015 zstd, …).
    pub id: u16,
    /// A short name: `deflate`, `shuffle`, `fletcher32`, `szip`, `nbit`, `scaleoffset`, `lzf`,
    /// `blosc`, `lz4`, `bzip2`, `zstd`, … or `filter_<id>` when unknown.
    pub name: String,
    /// The name stored in the file, if any.
    pub stored_name: Option<String>,
    /// The client-data parameters (for deflate, the level; for shuffle, the element size).
    pub parameters: Vec<u32>,
}

/// A variable's fill value: the value of never-written elements.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FillValue {
    /// The stored bytes, in the variable's byte order.
    pub bytes: Vec<u8>,
    /// The same decoded (as attributes are).
    pub value: Value,
}

/// A data variable (an HDF5 dataset, a NetCDF variable).
#[derive(Debug, Clone, Serialize)]
pub struct Variable {
    /// Absolute path of the object in the file.
    pub path: String,
    /// The group that holds it (`/` for the root).
    pub group: String,
    /// Its NetCDF name: the last part of `path`, less netCDF-C's `_nc4_non_coord_` prefix.
    pub name: String,
    /// Current extent.
    pub shape: Vec<u64>,
    /// Largest extent, `None` on an unlimited axis.
    pub max_shape: Vec<Option<u64>>,
    /// Element type.
    pub dtype: DType,
    /// Storage layout.
    pub layout: Layout,
    /// Chunk shape (element-size dimension dropped), `None` unless chunked. NetCDF-3 record
    /// variables report one record: `[1, rest of the shape…]`.
    pub chunk_shape: Option<Vec<u64>>,
    /// The fill value, if the file sets one. `None` means the format's default: zero bytes
    /// for HDF5. NetCDF-3 always has one (`_FillValue` or the NetCDF default of the type).
    pub fill_value: Option<FillValue>,
    /// The filter pipeline, empty when unfiltered.
    pub filters: Vec<Filter>,
    /// User attributes: all but the bookkeeping ones below.
    pub attributes: Vec<Attribute>,
    /// Bookkeeping attributes: `DIMENSION_LIST`, `REFERENCE_LIST`, `CLASS`, `NAME`,
    /// `_Netcdf4Dimid`, `_Netcdf4Coordinates`, `_nc3_strict`, `_NCProperties`.
    pub internal_attributes: Vec<Attribute>,
    /// One name per axis, when known (dimension scales, `_Netcdf4Coordinates`, NetCDF-3).
    pub dimensions: Option<Vec<String>>,
    /// Whether this variable is itself a dimension scale (a coordinate variable).
    pub is_dimension_scale: bool,
    /// Other paths that lead to this same object (hard or soft links).
    pub aliases: Vec<String>,
    /// HDF5 object header address (relative to the superblock), `None` for NetCDF-3.
    pub object_address: Option<u64>,
    /// The members of a compound type, in file order; empty for other types.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
}

impl Variable {
    /// The attribute called `name`, user or bookkeeping.
    pub fn attribute(&self, name: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .chain(&self.internal_attributes)
            .find(|a| a.name == name)
            .map(|a| &a.value)
    }
}

/// A dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dimension {
    /// Its name.
    pub name: String,
    /// The group where it is defined.
    pub group: String,
    /// Current length.
    pub length: u64,
    /// Whether it can grow (the record dimension of NetCDF-3, an unlimited HDF5 axis).
    pub unlimited: bool,
    /// The coordinate variable of the same name, if it has data (`None` for NetCDF-4
    /// dimension-only datasets and NetCDF-3 dimensions without a variable).
    pub coordinate_variable: Option<String>,
    /// The NetCDF-4 dimension id (`_Netcdf4Dimid`), when the file has one.
    pub netcdf4_dimid: Option<i64>,
}

/// An object that could not be listed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unlisted {
    /// Its path.
    pub path: String,
    /// Why it is not in the listing.
    pub reason: String,
}

/// Where one chunk's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChunkRef {
    /// Position in the chunk grid (element offset divided by the chunk shape).
    pub indices: Vec<u64>,
    /// Absolute offset in the file (the HDF5 superblock offset added).
    pub offset: u64,
    /// Length in bytes as stored (after filters).
    pub length: u64,
    /// HDF5 filter mask: bit `i` set means filter `i` of the pipeline was *not* applied to
    /// this chunk. 0 for NetCDF-3.
    pub filter_mask: u32,
}

/// A byte range of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ByteRange {
    /// Absolute offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

/// Where a variable's data is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DataRefs {
    /// Chunked (and NetCDF-3 record variables, one chunk per record). Never-written chunks
    /// are absent: their elements are the fill value.
    Chunked {
        /// Chunk shape.
        chunk_shape: Vec<u64>,
        /// Number of chunks along each axis (`ceil(shape / chunk_shape)`).
        grid_shape: Vec<u64>,
        /// The written chunks, in grid (row-major) order.
        chunks: Vec<ChunkRef>,
    },
    /// One contiguous block; `None` when never written (all fill value) or empty.
    Contiguous {
        /// Where the data is.
        range: Option<ByteRange>,
    },
    /// The data itself, stored in the object header.
    Compact {
        /// The raw bytes, in the variable's byte order.
        bytes: Vec<u8>,
    },
}

impl DataRefs {
    /// Number of byte ranges (written chunks, or 0/1 for contiguous, 0 for compact).
    pub fn range_count(&self) -> usize {
        match self {
            DataRefs::Chunked { chunks, .. } => chunks.len(),
            DataRefs::Contiguous { range } => usize::from(range.is_some()),
            DataRefs::Compact { .. } => 0,
        }
    }
}
