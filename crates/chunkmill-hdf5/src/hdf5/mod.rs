//! HDF5 and NetCDF-4 files, through hdf5-reader.
//!
//! The walk lists links itself ([`links`]), so that an object hdf5-reader refuses (a virtual
//! dataset, a corrupt header) is recorded in [`Inventory::unlisted`] with the reason while
//! its siblings are listed, and so that every object is listed once, under its first hard
//! link in name order, other links becoming aliases.

mod chunks;
mod links;
mod storage;

use std::collections::HashMap;
use std::sync::Arc;

use hdf5_reader::group::Group;
use hdf5_reader::messages::datatype::Datatype;
use hdf5_reader::messages::HdfMessage;
use hdf5_reader::object_header::ObjectHeader;
use hdf5_reader::{Attribute as H5Attribute, Dataset, Hdf5File, OpenOptions};
use parking_lot::Mutex;
use serde_json::Value;

use crate::dtype;
use crate::error::{Error, Result};
use crate::format::Format;
use crate::model::{
    Attribute, DataRefs, Dimension, FillValue, Filter, GroupInfo, Inventory, Layout, Unlisted,
    Variable,
};
use crate::source::RangeSource;
use crate::values::{decode_array, decode_element, ValueContext};

use chunks::FileFacts;
use links::{classify, group_links, ObjectKind, Target};

/// The `NAME` netCDF-C gives a dataset that only carries a dimension.
const NETCDF_DIMENSION_ONLY: &str = "This is a netCDF dimension but not a netCDF variable";
/// The prefix netCDF-C gives a variable named like a dimension it does not coordinate.
const NETCDF_NON_COORD_PREFIX: &str = "_nc4_non_coord_";
/// Deepest group nesting walked.
const MAX_DEPTH: usize = 256;

/// An open HDF5 file.
pub(crate) struct Hdf5Reader {
    name: String,
    file: Hdf5File,
    base: u64,
    size: u64,
    /// Datasets met by the last walk, by path, so `data_refs` need not look them up again.
    datasets: Mutex<HashMap<String, Dataset>>,
}

impl Hdf5Reader {
    /// Opens the file; hdf5-reader finds the superblock by the same search as
    /// [`detect_format`](crate::detect_format).
    pub(crate) fn open(source: Arc<dyn RangeSource>) -> Result<Self> {
        let name = source.name().to_string();
        let size = source.size();
        let mut filters = hdf5_reader::FilterRegistry::new();
        // h5py's LZF, which hdf5-reader does not know: string variables read whole
        // (`read_strings`) may use it.
        filters.register(
            crate::lzf::LZF_FILTER,
            Box::new(|filter, data, _| {
                crate::lzf::decoded_size(&filter.client_data)
                    .and_then(|n| crate::lzf::decompress(data, n))
                    .map_err(hdf5_reader::error::Error::InvalidData)
            }),
        );
        let options = OpenOptions::default()
            .with_chunk_cache_bytes(0)
            .with_chunk_cache_slots(1)
            .with_filter_registry(filters);
        let file = Hdf5File::from_storage_with_options(
            Arc::new(storage::SourceStorage::new(source)),
            options,
        )
        .map_err(|source| Error::Hdf5 {
            file: name.clone(),
            object: "superblock".into(),
            source,
        })?;
        let base = file.superblock().base_address;
        Ok(Self {
            name,
            file,
            base,
            size,
            datasets: Mutex::new(HashMap::new()),
        })
    }

    fn facts(&self) -> FileFacts<'_> {
        let sb = self.file.superblock();
        FileFacts {
            file: &self.name,
            storage: self.file.storage(),
            offset_size: sb.offset_size,
            length_size: sb.length_size,
            base: self.base,
            file_size: self.size,
        }
    }

    fn h5_error(&self, object: &str) -> impl Fn(hdf5_reader::error::Error) -> Error + '_ {
        let object = object.to_string();
        move |source| Error::Hdf5 {
            file: self.name.clone(),
            object: object.clone(),
            source,
        }
    }

    /// The dataset of `variable`, from the inventory's cache when it is there.
    fn dataset(&self, variable: &Variable) -> Result<Dataset> {
        let cached = self.datasets.lock().get(&variable.path).cloned();
        match cached {
            Some(ds) => Ok(ds),
            None => self
                .file
                .dataset(&variable.path)
                .map_err(self.h5_error(&variable.path)),
        }
    }

    /// Where the data of `variable` is.
    pub(crate) fn data_refs(&self, variable: &Variable) -> Result<DataRefs> {
        let ds = self.dataset(variable)?;
        let header = self
            .file
            .get_or_parse_header(ds.address())
            .map_err(self.h5_error(&variable.path))?;
        chunks::data_refs(&self.facts(), &variable.path, &ds, &header)
    }

    /// The text of every element of a string variable.
    pub(crate) fn read_strings(&self, variable: &Variable) -> Result<Vec<String>> {
        self.dataset(variable)?
            .read_strings()
            .map_err(self.h5_error(&variable.path))
    }

    /// Walks every group and builds the inventory.
    pub(crate) fn inventory(&self) -> Result<Inventory> {
        let root = self.file.root_group().map_err(self.h5_error("/"))?;
        let mut walk = Walk {
            reader: self,
            objects: Vec::new(),
            by_address: HashMap::new(),
            unlisted: Vec::new(),
            soft_links: Vec::new(),
        };
        walk.by_address.insert(root.address(), 0);
        walk.objects.push(Object {
            path: "/".into(),
            aliases: Vec::new(),
            kind: ObjectEntry::Group(root.clone()),
        });
        // A root that cannot be listed is an error for the whole file, not an unlisted entry.
        let links = walk.links(&root).map_err(self.h5_error("/"))?;
        walk.group(&root, "/", links, 0);
        walk.resolve_soft_links();
        Ok(walk.finish(&root))
    }
}

enum ObjectEntry {
    Group(Group),
    Dataset {
        group: String,
        dataset: Box<Dataset>,
        header: Arc<ObjectHeader>,
    },
}

struct Object {
    path: String,
    aliases: Vec<String>,
    kind: ObjectEntry,
}

struct Walk<'a> {
    reader: &'a Hdf5Reader,
    objects: Vec<Object>,
    by_address: HashMap<u64, usize>,
    unlisted: Vec<Unlisted>,
    /// (path of the link, absolute target path)
    soft_links: Vec<(String, String)>,
}

fn join(group: &str, name: &str) -> String {
    if group == "/" {
        format!("/{name}")
    } else {
        format!("{group}/{name}")
    }
}

/// `target` (absolute, or relative to `group`) as a normalised absolute path.
fn absolute(group: &str, target: &str) -> String {
    let full = if target.starts_with('/') {
        target.to_string()
    } else {
        join(group, target)
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in full.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

impl Walk<'_> {
    fn unlisted(&mut self, path: &str, reason: impl ToString) {
        self.unlisted.push(Unlisted {
            path: path.to_string(),
            reason: reason.to_string(),
        });
    }

    /// The links of `group`, in the order they were made when the group tracks it, else in
    /// name order.
    fn links(&self, group: &Group) -> hdf5_reader::error::Result<Vec<links::Link>> {
        let file = &self.reader.file;
        let sb = file.superblock();
        let header = file.get_or_parse_header(group.address())?;
        let mut links = group_links(file.storage(), &header, sb.offset_size, sb.length_size)?;
        links.sort_by(|a, b| a.name.cmp(&b.name));
        if links.iter().all(|l| l.creation_order.is_some()) {
            // Stable: a repeated index (a damaged file) keeps name order between equals.
            links.sort_by_key(|l| l.creation_order);
        }
        Ok(links)
    }

    fn group(&mut self, group: &Group, path: &str, links: Vec<links::Link>, depth: usize) {
        let file = &self.reader.file;
        for link in links {
            let child = join(path, &link.name);
            let address = match link.target {
                Target::Hard(address) => address,
                Target::Soft(target) => {
                    self.soft_links.push((child, absolute(path, &target)));
                    continue;
                }
                Target::External { file, path } => {
                    self.unlisted(
                        &child,
                        format!("external link to {file}:{path}, not followed"),
                    );
                    continue;
                }
            };
            if let Some(&index) = self.by_address.get(&address) {
                self.objects[index].aliases.push(child);
                continue;
            }
            let header = match file.get_or_parse_header(address) {
                Ok(header) => header,
                Err(e) => {
                    self.unlisted(&child, why_unlisted(&e));
                    continue;
                }
            };
            match classify(&header) {
                ObjectKind::Group if depth >= MAX_DEPTH => {
                    self.unlisted(&child, format!("groups nested deeper than {MAX_DEPTH}"));
                }
                ObjectKind::Group => match group.group(&link.name) {
                    Ok(sub) => {
                        self.by_address.insert(address, self.objects.len());
                        self.objects.push(Object {
                            path: child.clone(),
                            aliases: Vec::new(),
                            kind: ObjectEntry::Group(sub.clone()),
                        });
                        match self.links(&sub) {
                            Ok(links) => self.group(&sub, &child, links, depth + 1),
                            Err(e) => {
                                self.unlisted(
                                    &child,
                                    format!("cannot list the group's links: {e}"),
                                );
                            }
                        }
                    }
                    Err(e) => self.unlisted(&child, why_unlisted(&e)),
                },
                ObjectKind::Dataset => match group.dataset(&link.name) {
                    Ok(dataset) => {
                        self.by_address.insert(address, self.objects.len());
                        self.objects.push(Object {
                            path: child,
                            aliases: Vec::new(),
                            kind: ObjectEntry::Dataset {
                                group: path.to_string(),
                                dataset: Box::new(dataset),
                                header,
                            },
                        });
                    }
                    Err(e) => self.unlisted(&child, why_unlisted(&e)),
                },
                // Committed datatypes hold no data.
                ObjectKind::Other => {}
            }
        }
    }

    /// A soft link becomes an alias of its target, or an unlisted entry if it leads nowhere.
    fn resolve_soft_links(&mut self) {
        let by_path: HashMap<String, usize> = self
            .objects
            .iter()
            .enumerate()
            .flat_map(|(i, o)| {
                std::iter::once(&o.path)
                    .chain(&o.aliases)
                    .map(move |p| (p.clone(), i))
            })
            .collect();
        let file = &self.reader.file;
        for (link, target) in std::mem::take(&mut self.soft_links) {
            let index = by_path.get(&target).copied().or_else(|| {
                let address = file
                    .dataset(&target)
                    .map(|d| d.address())
                    .or_else(|_| file.group(&target).map(|g| g.address()))
                    .ok()?;
                self.by_address.get(&address).copied()
            });
            match index {
                Some(i) => self.objects[i].aliases.push(link),
                None => self.unlisted(
                    &link,
                    format!("soft link to {target}, which does not resolve"),
                ),
            }
        }
    }

    fn finish(self, root: &Group) -> Inventory {
        let reader = self.reader;
        let sb = reader.file.superblock();
        let paths: HashMap<u64, String> = self
            .by_address
            .iter()
            .filter_map(|(&a, &i)| self.objects.get(i).map(|o| (a, o.path.clone())))
            .collect();
        let cx = FileValues {
            root,
            paths: &paths,
            offset_size: sb.offset_size,
        };

        let mut unlisted = self.unlisted;
        let mut groups = Vec::new();
        let mut datasets = Vec::new();
        for object in &self.objects {
            match &object.kind {
                ObjectEntry::Group(group) => {
                    groups.push(group_info(object, group, &cx, &mut unlisted))
                }
                ObjectEntry::Dataset {
                    group,
                    dataset,
                    header,
                } => datasets.push((object, group, dataset, header)),
            }
        }

        let mut netcdf4 = groups.first().is_some_and(|g| {
            g.internal_attributes
                .iter()
                .any(|a| a.name == "_NCProperties")
        });
        let mut variables = Vec::new();
        let mut dimensions = Vec::new();
        let mut dimids: HashMap<i64, String> = HashMap::new();
        let mut scale_names: HashMap<String, String> = HashMap::new();
        let mut list_attrs: Vec<Option<Vec<Vec<String>>>> = Vec::new();
        for (object, group, dataset, header) in datasets {
            let attrs = dataset.attributes();
            let is_scale = attrs.iter().any(|a| {
                a.name == "CLASS" && a.read_string().is_ok_and(|s| s == "DIMENSION_SCALE")
            });
            let (attributes, internal_attributes) = split_attributes(&attrs, &cx, is_scale);
            let name_attr = internal_attributes
                .iter()
                .find(|a| a.name == "NAME")
                .and_then(|a| a.value.as_str());
            let dimension_only =
                is_scale && name_attr.is_some_and(|n| n.starts_with(NETCDF_DIMENSION_ONLY));
            let base_name = object
                .path
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let dimid = internal_attributes
                .iter()
                .find(|a| a.name == "_Netcdf4Dimid")
                .and_then(|a| a.value.as_i64());
            netcdf4 |= dimid.is_some()
                || internal_attributes
                    .iter()
                    .any(|a| a.name == "_Netcdf4Coordinates");
            let shape = dataset.shape().to_vec();
            let max_shape = max_shape(dataset);
            if is_scale {
                scale_names.insert(object.path.clone(), base_name.clone());
                if let Some(id) = dimid {
                    dimids.insert(id, base_name.clone());
                }
                dimensions.push(Dimension {
                    name: base_name.clone(),
                    group: group.clone(),
                    length: shape.first().copied().unwrap_or(0),
                    unlimited: max_shape.first().is_some_and(Option::is_none),
                    coordinate_variable: (!dimension_only).then(|| object.path.clone()),
                    netcdf4_dimid: dimid,
                });
            }
            if dimension_only {
                continue;
            }
            list_attrs.push(
                attrs
                    .iter()
                    .find(|a| a.name == "DIMENSION_LIST")
                    .map(|a| dimension_list(a, &cx)),
            );
            variables.push(variable(
                &cx,
                object,
                group,
                dataset,
                header,
                &shape,
                max_shape,
                attributes,
                internal_attributes,
                is_scale,
                &base_name,
            ));
        }

        // Dimension names, now that every scale is known.
        for (v, list) in variables.iter_mut().zip(list_attrs) {
            v.dimensions = dimension_names(v, list, &scale_names, &dimids);
        }

        {
            let mut cached = reader.datasets.lock();
            cached.clear();
            for object in &self.objects {
                if let ObjectEntry::Dataset { dataset, .. } = &object.kind {
                    cached.insert(object.path.clone(), (**dataset).clone());
                }
            }
        }

        Inventory {
            file: reader.name.clone(),
            format: Format::Hdf5 {
                superblock_offset: reader.base,
            },
            netcdf4,
            groups,
            variables,
            dimensions,
            unlisted,
        }
    }
}

/// The reason an object is unlisted, in words: virtual datasets are named as such.
fn why_unlisted(e: &hdf5_reader::error::Error) -> String {
    use hdf5_reader::error::Error as H5;
    let mut inner = e;
    while let H5::Context { source, .. } = inner {
        inner = source;
    }
    match inner {
        H5::UnsupportedLayoutClass(3) => {
            "virtual dataset: not supported (unsupported layout class 3)".into()
        }
        _ => e.to_string(),
    }
}

/// A group's path, attributes and aliases; attributes it cannot read are noted in `unlisted`.
fn group_info(
    object: &Object,
    group: &Group,
    cx: &FileValues<'_>,
    unlisted: &mut Vec<Unlisted>,
) -> GroupInfo {
    let (attributes, internal_attributes) = match group.attributes() {
        Ok(attrs) => split_attributes(&attrs, cx, false),
        Err(e) => {
            unlisted.push(Unlisted {
                path: object.path.clone(),
                reason: format!("the group's attributes cannot be read: {e}"),
            });
            (Vec::new(), Vec::new())
        }
    };
    GroupInfo {
        path: object.path.clone(),
        attributes,
        internal_attributes,
        aliases: object.aliases.clone(),
    }
}

/// A variable's dimension names: from its `DIMENSION_LIST` (the scales attached to each
/// axis), else from `_Netcdf4Coordinates` (NetCDF-4 dimension ids), else its own name if it is
/// a 1-D dimension scale. `None` unless there is one name per axis.
fn dimension_names(
    v: &Variable,
    list: Option<Vec<Vec<String>>>,
    scale_names: &HashMap<String, String>,
    dimids: &HashMap<i64, String>,
) -> Option<Vec<String>> {
    let from_list = list.and_then(|axes| {
        axes.iter()
            .map(|targets| targets.iter().find_map(|t| scale_names.get(t).cloned()))
            .collect::<Option<Vec<String>>>()
    });
    let from_ids = || {
        let ids: Vec<i64> = match v.attribute("_Netcdf4Coordinates")? {
            Value::Array(a) => a.iter().filter_map(Value::as_i64).collect(),
            other => vec![other.as_i64()?],
        };
        ids.iter()
            .map(|id| dimids.get(id).cloned())
            .collect::<Option<Vec<_>>>()
    };
    let own = || {
        (v.is_dimension_scale && v.shape.len() == 1)
            .then(|| vec![v.path.rsplit('/').next().unwrap_or_default().to_string()])
    };
    from_list
        .or_else(from_ids)
        .or_else(own)
        .filter(|names| names.len() == v.shape.len())
}

fn max_shape(ds: &Dataset) -> Vec<Option<u64>> {
    match ds.max_dims() {
        Some(max) => max
            .iter()
            .map(|&m| (m != hdf5_reader::messages::dataspace::UNLIMITED).then_some(m))
            .collect(),
        None => ds.shape().iter().map(|&s| Some(s)).collect(),
    }
}

#[allow(clippy::too_many_arguments)]
fn variable(
    cx: &FileValues<'_>,
    object: &Object,
    group: &str,
    dataset: &Dataset,
    header: &ObjectHeader,
    shape: &[u64],
    max_shape: Vec<Option<u64>>,
    attributes: Vec<Attribute>,
    internal_attributes: Vec<Attribute>,
    is_scale: bool,
    base_name: &str,
) -> Variable {
    let dtype = dtype::from_hdf5(dataset.dtype(), cx.vlen_ref_size());
    let (layout, chunk_shape) = match chunks::raw_layout(header) {
        Some(hdf5_reader::messages::layout::DataLayout::Chunked {
            dims,
            chunk_indexing,
            ..
        }) => (
            Layout::Chunked {
                index: chunks::index_kind(chunk_indexing.as_ref()),
            },
            chunks::chunk_dims(dims, shape.len()).map(|c| c.into_iter().map(u64::from).collect()),
        ),
        Some(hdf5_reader::messages::layout::DataLayout::Compact { .. }) => (Layout::Compact, None),
        _ => (Layout::Contiguous, None),
    };
    let filters = header
        .messages
        .iter()
        .find_map(|m| match m {
            HdfMessage::FilterPipeline(p) => Some(
                p.filters
                    .iter()
                    .map(|f| Filter {
                        id: f.id,
                        name: filter_name(f.id),
                        stored_name: f.name.clone(),
                        parameters: f.client_data.clone(),
                    })
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default();
    let fill_value = dataset
        .fill_value()
        .and_then(|f| f.value.as_ref())
        .map(|bytes| FillValue {
            bytes: bytes.clone(),
            value: decode_element(dataset.dtype(), bytes, cx),
        });
    Variable {
        path: object.path.clone(),
        group: group.to_string(),
        name: base_name
            .strip_prefix(NETCDF_NON_COORD_PREFIX)
            .unwrap_or(base_name)
            .to_string(),
        shape: shape.to_vec(),
        max_shape,
        dtype,
        layout,
        chunk_shape,
        fill_value,
        filters,
        attributes,
        internal_attributes,
        dimensions: None,
        is_dimension_scale: is_scale,
        aliases: object.aliases.clone(),
        object_address: Some(dataset.address()),
        fields: dtype::fields(dataset.dtype(), cx.vlen_ref_size()),
    }
}

// Registered ids from the HDF Group's list.
/// The short name of an HDF5 filter id (`deflate`, `shuffle`, …), `filter_<id>` if unknown.
pub fn filter_name(id: u16) -> String {
    match id {
        1 => "deflate",
        2 => "shuffle",
        3 => "fletcher32",
        4 => "szip",
        5 => "nbit",
        6 => "scaleoffset",
        305 => "lzo",
        307 => "bzip2",
        32000 => "lzf",
        32001 => "blosc",
        32004 => "lz4",
        32008 => "bitshuffle",
        32013 => "zfp",
        32015 => "zstd",
        32017 => "sz",
        32026 => "blosc2",
        _ => return format!("filter_{id}"),
    }
    .to_string()
}

/// Decoding context over an open HDF5 file.
struct FileValues<'a> {
    root: &'a Group,
    paths: &'a HashMap<u64, String>,
    offset_size: u8,
}

impl ValueContext for FileValues<'_> {
    fn vlen_ref_size(&self) -> usize {
        4 + usize::from(self.offset_size) + 4
    }
    fn resolve_vlen(&self, reference: &[u8], base_size: usize) -> Option<Vec<u8>> {
        self.root
            .resolve_vlen_reference_bytes(reference, base_size)
            .ok()
    }
    fn object_path(&self, address: u64) -> Option<String> {
        self.paths.get(&address).cloned()
    }
    fn offset_size(&self) -> u8 {
        self.offset_size
    }
}

/// Attribute names that are HDF5 or NetCDF-4 bookkeeping rather than user metadata.
fn is_internal(name: &str, dimension_scale: bool) -> bool {
    matches!(
        name,
        "DIMENSION_LIST"
            | "REFERENCE_LIST"
            | "_Netcdf4Dimid"
            | "_Netcdf4Coordinates"
            | "_nc3_strict"
            | "_NCProperties"
            | "_SuperblockVersion"
            | "_IsNetcdf4"
    ) || (dimension_scale && matches!(name, "CLASS" | "NAME"))
}

/// Decodes attributes, split into (user, bookkeeping).
fn split_attributes(
    attrs: &[H5Attribute],
    cx: &FileValues<'_>,
    dimension_scale: bool,
) -> (Vec<Attribute>, Vec<Attribute>) {
    let mut user = Vec::new();
    let mut internal = Vec::new();
    for attr in attrs {
        let value = attribute_value(attr, cx);
        let decoded = Attribute {
            name: attr.name.clone(),
            value,
            dtype: crate::dtype::numeric_name(&crate::dtype::from_hdf5(&attr.datatype, 16)),
        };
        if is_internal(&attr.name, dimension_scale) {
            internal.push(decoded);
        } else {
            user.push(decoded);
        }
    }
    (user, internal)
}

fn attribute_value(attr: &H5Attribute, cx: &FileValues<'_>) -> Value {
    let strings = |v: Vec<String>| {
        crate::values::shape_values(v.into_iter().map(Value::String).collect(), &attr.shape)
    };
    match &attr.datatype {
        Datatype::String { .. } => match attr.read_strings() {
            Ok(v) => strings(v),
            Err(_) => Value::Null,
        },
        Datatype::VarLen {
            kind: hdf5_reader::VarLenKind::String,
            ..
        } => match &attr.decoded_strings {
            Some(v) => strings(v.clone()),
            // A scalar variable-length string arrives already resolved.
            None if attr.shape.iter().product::<u64>() == 1 => Value::String(
                String::from_utf8_lossy(&attr.raw_data)
                    .trim_end_matches('\0')
                    .to_string(),
            ),
            None => Value::Null,
        },
        dt => decode_array(dt, &attr.raw_data, &attr.shape, cx),
    }
}

/// `DIMENSION_LIST`: for each axis, the paths of the dimension scales attached to it.
fn dimension_list(attr: &H5Attribute, cx: &FileValues<'_>) -> Vec<Vec<String>> {
    let size = cx.vlen_ref_size();
    attr.raw_data
        .chunks_exact(size)
        .map(|entry| match decode_element(&attr.datatype, entry, cx) {
            Value::Array(targets) => targets
                .into_iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}
