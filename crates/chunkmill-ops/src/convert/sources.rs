//! What `chunkmill convert` reads: archival files (NetCDF-4/HDF5/NetCDF-3, through the same
//! scan and combine as `virtualize`), reference files (kerchunk JSON or Parquet, Icechunk
//! repositories) or a Zarr store, each array described as a Zarr array with the endpoint a
//! task reads it through.
//!
//! Files and references become one [`VirtualDataset`], written as kerchunk JSON into the work
//! dir when the job runs, so that every worker process (local, SLURM, a batch engine) reads
//! the same chunks by byte range without scanning again.

use chunkmill_store::DataType;
use std::path::Path;

use chunkmill_grid::{Grid, Region};
use chunkmill_manifest::{CombineOptions, VirtualDataset, VirtualizeOptions};
use chunkmill_plan::Endpoint;
use chunkmill_store::zarr::{self, ArrayInfo, GroupInfo, Node};
use chunkmill_store::{Store, StoreKind};
use serde_json::{Map, Value};

use crate::tasks::StageRunner;
use crate::{Context, OpsError};

/// The inputs of a conversion.
#[derive(Debug)]
pub enum Source {
    /// A Zarr store.
    Zarr {
        /// The store.
        store: Store,
        /// Its groups.
        groups: Vec<GroupInfo>,
        /// Its arrays, sorted by key (listed once, when opened).
        arrays: Vec<SourceArray>,
    },
    /// Files or references, as one virtual dataset.
    Virtual(std::sync::Arc<VirtualDataset>),
}

/// One array of a source.
#[derive(Clone, Debug)]
pub struct SourceArray {
    /// Its key (`air`, `group/air`).
    pub key: String,
    /// Described as a Zarr array: numpy data type name, little-endian elements; for virtual
    /// arrays, as the kerchunk (Zarr v2) view shows it (fill value = `_FillValue`).
    pub info: ArrayInfo,
    /// The attributes as the file has them (with `_FillValue`).
    pub attributes: Map<String, Value>,
    /// Why it cannot be converted (a data type that is not a number or a boolean), if so:
    /// refused only when the job chooses it, so `--drop` can leave it out.
    pub unsupported: Option<String>,
}

/// How the source is told, for messages.
#[must_use]
pub fn describe(inputs: &[String]) -> String {
    match inputs {
        [one] => one.clone(),
        [first, .., last] => format!("{first} … {last} ({} inputs)", inputs.len()),
        [] => String::new(),
    }
}

fn is_zarr_dir(path: &Path) -> bool {
    [".zgroup", ".zarray", "zarr.json", ".zmetadata"]
        .iter()
        .any(|m| path.join(m).is_file())
}

/// Opens the inputs: one Zarr store, one reference file or repository, or data files
/// combined as `combine` says with every check of `virtualize` (its `threads` is unused: the
/// scan's is). A reference input's chunks must all lie under the directory holding it or
/// under a prefix of `allow_refs`. Returns the source and notes for the user (an inferred
/// concat dimension). `group` (`sub`, `a/b`) takes only that group of the inputs (and what
/// lies under it) as the root, as xarray's `group=` does.
///
/// # Errors
/// [`OpsError::Refused`] naming the input and the reason (missing, unreadable, files that
/// differ, references outside the allowed locations); [`OpsError::Usage`] for a malformed
/// request.
pub fn open(
    inputs: &[String],
    combine: &CombineOptions,
    allow_refs: &[String],
    group: Option<&str>,
) -> Result<(Source, Vec<String>), OpsError> {
    let group = group.map(|g| g.trim_matches('/')).filter(|g| !g.is_empty());
    let checked = |path: &Path, read: chunkmill_manifest::Result<VirtualDataset>| {
        let mut dataset = read?;
        if let Some(group) = group {
            dataset.select_group(group)?;
        }
        let access = chunkmill_manifest::ReferenceAccess::for_reference_file(path, allow_refs)?;
        access.check(&dataset)?;
        super::text::as_stored_by_xarray(&mut dataset);
        Ok((Source::Virtual(dataset.into()), Vec::new()))
    };
    if let [one] = inputs {
        let path = Path::new(one.strip_prefix("file://").unwrap_or(one));
        let local = !one.contains("://") || one.starts_with("file://");
        if local && !one.starts_with('@') && !one.contains(['*', '?', '[']) && !path.exists() {
            return Err(OpsError::Refused(format!(
                "{one}: no such file or directory"
            )));
        }
        if path.is_dir() {
            if chunkmill_manifest::is_icechunk(path) {
                return checked(path, chunkmill_manifest::read_icechunk(path));
            }
            if chunkmill_manifest::is_kerchunk_parquet(path) {
                return checked(path, chunkmill_manifest::read_kerchunk_parquet(path));
            }
            if is_zarr_dir(path) {
                return Ok((open_zarr(one, group)?, Vec::new()));
            }
            return Err(OpsError::Refused(format!(
                "{one}: a directory that is neither a Zarr store, kerchunk Parquet references nor an Icechunk repository"
            )));
        }
        if path.is_file() && one.ends_with(".json") {
            return checked(path, chunkmill_manifest::read_kerchunk_json(path));
        }
        let data_file = [".nc", ".nc4", ".h5", ".hdf5", ".he5", ".cdf", ".hdf"]
            .iter()
            .any(|ext| one.ends_with(ext));
        if one.contains("://") && !data_file && !one.contains(['*', '?', '[']) {
            return Ok((open_zarr(one, group)?, Vec::new()));
        }
    }
    let mut options = VirtualizeOptions::new("");
    options.concat_dim.clone_from(&combine.concat_dim);
    options.stack = combine.stack;
    options.identical_dims.clone_from(&combine.identical_dims);
    options.compat = combine.compat;
    options.dropped.clone_from(&combine.dropped);
    options.keep.clone_from(&combine.keep);
    options.decode_per_input = combine.decode_per_input;
    options.group = group.map(str::to_string);
    // Small chunks stay references: the reader fetches what it needs.
    options.inline_threshold = 0;
    // szip, nbit and scaleoffset are decoded by hdf5-reader's own filters.
    options.native_filters = true;
    let (mut dataset, report) = chunkmill_manifest::build(inputs, &options)?;
    super::text::as_stored_by_xarray(&mut dataset);
    Ok((Source::Virtual(dataset.into()), report.notes))
}

fn open_zarr(url: &str, group: Option<&str>) -> Result<Source, OpsError> {
    // A group of a store is the store under that prefix: its arrays and subgroups.
    let opened = match group {
        Some(g) => format!("{}/{g}", url.trim_end_matches('/')),
        None => url.to_string(),
    };
    let store = Store::open(&opened)?;
    let nodes = zarr::list_nodes(&store).of_input()?;
    if nodes.is_empty() {
        // A group name that is not there is a mistake in the command, as for data files.
        return Err(match group {
            Some(g) => OpsError::Usage(format!("--group {g}: {url} has no Zarr group /{g}")),
            None => OpsError::Refused(format!("{url}: no Zarr array or group found")),
        });
    }
    let mut groups = Vec::new();
    let mut arrays = Vec::new();
    for node in nodes {
        match node {
            Node::Group(g) => groups.push(g),
            Node::Array(info) => arrays.push(SourceArray {
                key: info.path.clone(),
                attributes: info.attributes.clone(),
                info,
                unsupported: None,
            }),
            // An array it cannot read is refused only when chosen, so --drop leaves it out;
            // it has no shape or dimensions to take part in any other check.
            Node::Unsupported { path, reason } => arrays.push(SourceArray {
                key: path.clone(),
                attributes: Map::new(),
                unsupported: Some(format!(
                    "{reason}; leave it out with --drop {}",
                    crate::job::plan::last_segment(&path)
                )),
                info: ArrayInfo {
                    path,
                    zarr_format: 3,
                    shape: Vec::new(),
                    dtype: DataType::Raw(0),
                    item_size: 0,
                    chunks: Vec::new(),
                    inner_chunks: None,
                    dimension_names: None,
                    fill_value: Value::Null,
                    attributes: Map::new(),
                    compressor: None,
                    codecs: Vec::new(),
                },
            }),
        }
    }
    Ok(Source::Zarr {
        store,
        groups,
        arrays,
    })
}

/// The data type of a virtual array's numpy `dtype.str`, when convert can copy it: numbers,
/// booleans and fixed-length text (a file's character arrays and variable-length strings
/// become fixed-length text when the source is opened, see `text`).
fn convertible(dtype: &str) -> Option<DataType> {
    DataType::from_typestr(dtype).ok().filter(|t| {
        t.is_numeric()
            || matches!(
                t,
                DataType::Complex(_) | DataType::Bytes(_) | DataType::Unicode(_)
            )
    })
}

impl Source {
    /// Every array, sorted by key.
    #[must_use]
    pub fn arrays(&self) -> Vec<SourceArray> {
        match self {
            Source::Zarr { arrays, .. } => arrays.clone(),
            Source::Virtual(dataset) => dataset
                .arrays
                .iter()
                .map(|(key, array)| {
                    let meta = &array.metadata;
                    let dtype = convertible(&meta.dtype);
                    // Text left as it was (a character array still of `|S1`) is not copied
                    // as characters: xarray reads it as strings.
                    let why = super::text::why_unconvertible(array).or_else(|| {
                        dtype.is_none().then(|| {
                            format!(
                                "data type {} cannot be converted (numbers, booleans and text only)",
                                meta.dtype
                            )
                        })
                    });
                    let unsupported = why.map(|why| {
                        format!("{}: {key}: {why}; leave it out with --drop {key}", dataset.name)
                    });
                    let zarray = meta.to_zarray(array.manifest.has_missing());
                    let mut attributes = meta.attributes.clone();
                    attributes.remove("_FillValue");
                    SourceArray {
                        key: key.clone(),
                        info: ArrayInfo {
                            path: key.clone(),
                            zarr_format: 2,
                            shape: meta.shape.clone(),
                            dtype: dtype.unwrap_or(DataType::Raw(meta.element_size())),
                            item_size: meta.element_size(),
                            chunks: meta.chunk_shape.clone(),
                            inner_chunks: None,
                            dimension_names: Some(
                                meta.dimension_names.iter().cloned().map(Some).collect(),
                            ),
                            fill_value: zarray.get("fill_value").cloned().unwrap_or(Value::Null),
                            attributes,
                            compressor: None,
                            codecs: Vec::new(),
                        },
                        attributes: meta.attributes.clone(),
                        unsupported,
                    }
                })
                .collect(),
        }
    }

    /// The groups a target holding `array_keys` needs: the root and every group above an
    /// array (readers refuse an array whose parent group has no metadata), each with the
    /// source's attributes for it.
    #[must_use]
    pub fn groups_for(&self, array_keys: &[&str], zarr_format: u8) -> Vec<GroupInfo> {
        zarr::parent_groups(array_keys)
            .into_iter()
            .map(|path| GroupInfo {
                attributes: self.group_attributes(&path),
                path,
                zarr_format,
            })
            .collect()
    }

    /// The attributes of the group at `path` (`""` for the root); empty for a group the
    /// source does not describe (an implicit parent).
    #[must_use]
    pub fn group_attributes(&self, path: &str) -> Map<String, Value> {
        match self {
            Source::Zarr { groups, .. } => groups
                .iter()
                .find(|g| g.path == path)
                .map(|g| g.attributes.clone())
                .unwrap_or_default(),
            Source::Virtual(dataset) => dataset.groups.get(path).cloned().unwrap_or_default(),
        }
    }

    /// Store kind of the chunk data, for the cost model.
    #[must_use]
    pub fn kind(&self) -> StoreKind {
        match self {
            Source::Zarr { store, .. } => store.kind(),
            Source::Virtual(dataset) => {
                if dataset.urls.iter().any(|u| u.starts_with("s3://")) {
                    StoreKind::S3
                } else {
                    StoreKind::Local
                }
            }
        }
    }

    /// The endpoint tasks read `array` through; `references` is where the virtual dataset is
    /// (or will be) written.
    ///
    /// # Errors
    /// [`OpsError::Refused`] for a chunk grid that cannot be built.
    pub fn endpoint(&self, array: &SourceArray, references: &str) -> Result<Endpoint, OpsError> {
        let grid = Grid::regular(&array.info.shape, &array.info.chunks).about(&array.key)?;
        Ok(match self {
            Source::Zarr { store, .. } => Endpoint::Zarr {
                url: store.url().to_string(),
                path: array.key.clone(),
                grid,
            },
            Source::Virtual(_) => Endpoint::References {
                url: references.to_string(),
                path: array.key.clone(),
                grid,
            },
        })
    }

    /// Every element of `array`, little-endian, read now (coordinates, to select by value),
    /// the way tasks read it.
    ///
    /// # Errors
    /// [`OpsError::Refused`] naming the array when it cannot be read.
    pub fn read_all(&self, array: &SourceArray) -> Result<Vec<u8>, OpsError> {
        // The references are not written yet: the runner is given them in memory (shared,
        // not copied).
        const IN_MEMORY: &str = "in-memory://references.json";
        let runner = StageRunner::new();
        if let Source::Virtual(dataset) = self {
            runner.preload_references(IN_MEMORY, dataset.clone());
        }
        let endpoint = self.endpoint(array, IN_MEMORY)?;
        runner
            .read_region(
                &endpoint,
                &Region::whole(&array.info.shape),
                array.info.item_size,
            )
            .map_err(|e| OpsError::Refused(format!("{}: cannot read: {e}", array.key)))
    }
}
