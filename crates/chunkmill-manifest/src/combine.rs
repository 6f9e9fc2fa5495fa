//! Joining virtual datasets along a dimension, strictly.
//!
//! With `concat_dim` present in the inputs, every array that has it is concatenated along it;
//! absent, the inputs are refused unless `stack` asks for every array but the dimension
//! coordinates to be stacked along a new leading dimension of that name (which gets no
//! coordinate). Arrays named in `identical_dims` must be equal in every input (compared by
//! value: they are loaded by the scan) and are taken once. Every other array without the
//! concat dimension is taken once too, after its values were compared in every input (a
//! digest of what a reader decodes, see [`crate::compare`]) unless `compat` is
//! [`Compat::Override`]: inputs that differ there are refused, naming the input and the array.
//!
//! The concat coordinate (loaded) must be strictly monotonic across the joined inputs: the
//! inputs are ordered by its first value beforehand ([`order_by_coordinate`], as
//! `xarray.combine_by_coords` orders them), and an overlap, a repeated value or a coordinate
//! that goes back is refused, naming the inputs and the values.
//!
//! Before joining an array, each input is compared with the first, and the first difference
//! is an error naming the input, the array and both values: dtype, codecs and their
//! parameters, fill value, dimension names, the CF encoding attributes (`scale_factor`,
//! `add_offset`, `_FillValue`, `missing_value`), for the concat coordinate also `units` and
//! `calendar`, the shape off the concat axis and the chunk shape. References cannot express a
//! partial chunk in the middle of an array (zarr-specs #394), so every input but the last must
//! have a length along the concat dimension that is a multiple of the chunk length. The concat
//! coordinate itself is loaded, so its values are concatenated and inlined whatever its
//! chunking (a NetCDF-4 unlimited `time` is often one 512-element chunk per file).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::array::{base_name, InputEncoding, ManifestArray, VirtualDataset};
use crate::compare;
use crate::dense::{concat_values, values_as_f64};
use crate::error::{Error, Mismatch, Result};
use crate::manifest::ChunkManifest;

/// CF attributes that change how stored values decode: they must agree between inputs.
pub const CF_ENCODING_ATTRIBUTES: [&str; 4] =
    ["scale_factor", "add_offset", "_FillValue", "missing_value"];

/// Attributes of the concat coordinate that must agree (the values are encoded with them).
pub const CONCAT_COORDINATE_ATTRIBUTES: [&str; 2] = ["units", "calendar"];

/// What to do with an array that lacks the concat dimension (it is written once), named as
/// xarray's `compat` argument names the same choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compat {
    /// Its values must be equal in every input (compared by a digest): a difference is
    /// refused.
    #[default]
    Equals,
    /// The first input's array is taken without comparing the others.
    Override,
}

impl std::str::FromStr for Compat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "equals" => Ok(Self::Equals),
            "override" => Ok(Self::Override),
            other => Err(format!("'{other}': expected equals or override")),
        }
    }
}

/// How to join.
#[derive(Debug, Clone, Default)]
pub struct CombineOptions {
    /// The dimension to concatenate along (or to stack along, with `stack`).
    /// `None` only for one input.
    pub concat_dim: Option<String>,
    /// Stack the inputs along `concat_dim`, a new dimension that no input may have.
    pub stack: bool,
    /// Variables that must be equal in every input (compared by value) and are taken once.
    pub identical_dims: Vec<String>,
    /// Whether the other arrays without the concat dimension are compared.
    pub compat: Compat,
    /// Arrays the job leaves out, where it can (`convert --drop`): not compared, and the
    /// refusal of a difference suggests `--drop`. `None` where there is no such choice.
    pub dropped: Option<Vec<String>>,
    /// The variables the job asks for (`convert --variables`), `None` for all: the others
    /// (except the coordinates of their dimensions) are left out before any check, so that a
    /// variable nobody asked for cannot block the job.
    pub keep: Option<Vec<String>>,
    /// The job decodes each input's values on the way (`convert --decode-cf`): the CF
    /// encoding (`_FillValue`, `missing_value`, `scale_factor`, `add_offset`) and the fill
    /// value of an array along the concat dimension may then differ between inputs; each
    /// input's is recorded in [`VirtualDataset::encodings`] instead of refused. References
    /// cannot hold that (one array has one encoding), so `virtualize` never sets it.
    pub decode_per_input: bool,
    /// Threads reading the arrays compared (0: one).
    pub threads: usize,
}

enum Role {
    Concat(usize),
    Stack,
    Once,
    Identical,
}

/// The keys of the arrays `keep` names (by key or by last segment) in any input, with the
/// coordinates of their dimensions: what convert's `--variables` writes.
fn wanted(parts: &[VirtualDataset], keep: &[String]) -> BTreeSet<String> {
    let chosen = |key: &str| keep.iter().any(|n| n == key || n == base_name(key));
    let dims: BTreeSet<&str> = parts
        .iter()
        .flat_map(|p| p.arrays.iter())
        .filter(|(key, _)| chosen(key))
        .flat_map(|(_, array)| array.metadata.dimension_names.iter().map(String::as_str))
        .collect();
    parts
        .iter()
        .flat_map(|p| p.arrays.keys())
        .filter(|key| chosen(key) || dims.contains(base_name(key)))
        .cloned()
        .collect()
}

/// JSON values equal, numbers by value (`1 == 1.0`).
pub(crate) fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(p), Some(q)) => p == q,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_value(p, q))
        }
        _ => a == b,
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "absent".to_string(), Value::to_string)
}

/// Orders inputs by the first value of their loaded concat coordinate (as
/// `xarray.combine_by_coords` does): ascending, or descending when the coordinate decreases
/// in every input that has more than one value. The given order is kept among equal values
/// and when any input lacks a loaded numeric coordinate. Returns whether the order changed.
pub fn order_by_coordinate(parts: &mut [VirtualDataset], concat_dim: &str) -> bool {
    let values: Option<Vec<Vec<f64>>> = parts
        .iter()
        .map(|p| {
            let a = p.arrays.get(concat_dim)?;
            values_as_f64(&a.metadata.dtype, a.loaded_values()?)
        })
        .collect();
    let Some(values) = values else {
        return false;
    };
    if values.iter().any(Vec::is_empty) {
        return false;
    }
    let descending = is_descending(&values);
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|&a, &b| {
        let o = values[a][0].total_cmp(&values[b][0]);
        if descending {
            o.reverse()
        } else {
            o
        }
    });
    if order.iter().enumerate().all(|(i, &o)| i == o) {
        return false;
    }
    let mut taken: Vec<Option<VirtualDataset>> =
        parts.iter_mut().map(|p| Some(std::mem::take(p))).collect();
    for (slot, &o) in parts.iter_mut().zip(&order) {
        if let Some(p) = taken[o].take() {
            *slot = p;
        }
    }
    true
}

/// Whether a coordinate decreases in every input with more than one value (and there is
/// one): xarray then joins in decreasing order.
fn is_descending(values: &[Vec<f64>]) -> bool {
    let several: Vec<&Vec<f64>> = values.iter().filter(|v| v.len() > 1).collect();
    !several.is_empty() && several.iter().all(|v| v.windows(2).all(|w| w[1] < w[0]))
}

/// Joins `parts` as `options` says (see the module documentation).
///
/// # Errors
/// [`Error::Usage`] for no input, or several without a concat dimension;
/// [`Error::Refused`] for a concat dimension no input has (without `stack`), or one they
/// have (with `stack`), and for a concat coordinate that overlaps, repeats or goes back;
/// [`Error::Mismatch`] for the first difference between an input and the first;
/// [`Error::Combine`] for a partial chunk before the last input, an identical-dims variable
/// that was not loaded, or an array without the concat dimension whose values differ.
pub fn combine(parts: Vec<VirtualDataset>, options: &CombineOptions) -> Result<VirtualDataset> {
    let mut parts = parts;
    if let Some(keep) = &options.keep {
        let wanted = wanted(&parts, keep);
        // A name no input has is the job's to refuse, listing the variables there are.
        let all_found = keep
            .iter()
            .all(|n| wanted.iter().any(|k| k == n || base_name(k) == n));
        if all_found {
            for p in &mut parts {
                p.arrays.retain(|key, _| wanted.contains(key));
            }
        }
    }
    let Some(dim) = options.concat_dim.as_deref() else {
        return match parts.len() {
            0 => Err(Error::Usage("no input to combine".into())),
            1 => Ok(parts.remove(0)),
            n => Err(Error::Usage(format!(
                "{n} inputs and no concat dimension: name the dimension to concatenate along with --concat-dim"
            ))),
        };
    };
    if !options.stack {
        crate::rebase::rebase_concat_times(&mut parts, dim)?;
    }
    let first = parts
        .first()
        .ok_or_else(|| Error::Usage("no input to combine".into()))?;

    // Same variables everywhere.
    for p in &parts[1..] {
        let mismatch = |key: &str, got: &str, expected: &str| {
            Error::Mismatch(Box::new(Mismatch {
                file: p.name.clone(),
                variable: key.to_string(),
                what: "presence".into(),
                got: got.into(),
                expected: expected.into(),
                first: first.name.clone(),
                hint: String::new(),
            }))
        };
        // The way around it, in the words of the command that combines.
        let around = |key: &str| match options.dropped {
            Some(_) => "; choose the variables to convert with --variables".to_string(),
            None => format!("; leave it out with --drop {}", base_name(key)),
        };
        if let Some(key) = first.arrays.keys().find(|k| !p.arrays.contains_key(*k)) {
            return Err(mismatch(key, "absent", &format!("present{}", around(key))));
        }
        if let Some(key) = p.arrays.keys().find(|k| !first.arrays.contains_key(*k)) {
            return Err(mismatch(key, "present", &format!("absent{}", around(key))));
        }
    }

    let concat_mode = check_concat_dim(&parts, dim, options.stack)?;
    if concat_mode {
        check_concat_coordinate(&parts, dim)?;
    }
    let mut urls = Vec::new();
    let mut url_offsets = Vec::with_capacity(parts.len());
    for p in &parts {
        url_offsets
            .push(u32::try_from(urls.len()).map_err(|_| Error::Manifest("too many URLs".into()))?);
        urls.extend(p.urls.iter().cloned());
    }

    let mut roles = Vec::with_capacity(first.arrays.len());
    for (key, array) in &first.arrays {
        let name = base_name(key);
        let dims = &array.metadata.dimension_names;
        if dims.len() != array.metadata.shape.len() {
            return Err(Error::Combine {
                file: parts[0].name.clone(),
                variable: key.clone(),
                reason: format!(
                    "{} dimension names for {} axes",
                    dims.len(),
                    array.metadata.shape.len()
                ),
            });
        }
        let role = if options.identical_dims.iter().any(|d| d == name) {
            Role::Identical
        } else if concat_mode {
            match dims.iter().position(|d| d == dim) {
                Some(axis) => Role::Concat(axis),
                None => Role::Once,
            }
        } else if dims.len() == 1 && dims[0] == name {
            Role::Once
        } else {
            Role::Stack
        };
        roles.push((key.clone(), role));
    }
    if options.compat == Compat::Equals {
        let once: Vec<&str> = roles
            .iter()
            .filter(|(key, role)| {
                matches!(role, Role::Once)
                    && !options
                        .dropped
                        .iter()
                        .flatten()
                        .any(|d| d == key || d == base_name(key))
            })
            .map(|(key, _)| key.as_str())
            .collect();
        compare_once(&parts, &once, dim, options)?;
    }

    let mut arrays = BTreeMap::new();
    let mut encodings = BTreeMap::new();
    for (key, role) in roles {
        let all: Vec<&ManifestArray> = parts.iter().filter_map(|p| p.arrays.get(&key)).collect();
        let joined = match role {
            Role::Once => {
                let mut a = all[0].clone();
                a.manifest.shift_paths(url_offsets[0])?;
                a
            }
            Role::Identical => identical(&parts, &key, &all)?,
            Role::Concat(axis) => {
                let coordinate = base_name(&key) == dim;
                let per_input = options.decode_per_input && !coordinate;
                check_common(&parts, &key, &all, coordinate, per_input)?;
                if per_input {
                    if let Some(e) = input_encodings(&parts, &all, axis) {
                        encodings.insert(key.clone(), e);
                    }
                }
                concat(&parts, &key, &all, axis, dim, &url_offsets)?
            }
            Role::Stack => {
                check_common(&parts, &key, &all, false, false)?;
                stack(&parts, &key, &all, dim, &url_offsets)?
            }
        };
        arrays.insert(key, joined);
    }
    Ok(VirtualDataset {
        name: format!("{} inputs joined along {dim}", parts.len()),
        urls,
        groups: first.groups.clone(),
        arrays,
        encodings,
    })
}

/// Each input's part along `axis` and its CF encoding, when some input's differs from the
/// first's; `None` when they all agree.
fn input_encodings(
    parts: &[VirtualDataset],
    all: &[&ManifestArray],
    axis: usize,
) -> Option<Vec<InputEncoding>> {
    let encoding = |a: &ManifestArray| -> Map<String, Value> {
        CF_ENCODING_ATTRIBUTES
            .iter()
            .filter_map(|&n| Some((n.to_string(), a.metadata.attributes.get(n)?.clone())))
            .collect()
    };
    let first = encoding(all[0]);
    let same = all.iter().skip(1).all(|a| {
        let e = encoding(a);
        same_value(&a.metadata.fill_value, &all[0].metadata.fill_value)
            && e.len() == first.len()
            && e.iter()
                .all(|(k, v)| first.get(k).is_some_and(|f| same_value(f, v)))
    });
    if same {
        return None;
    }
    let mut start = 0;
    let mut out = Vec::with_capacity(all.len());
    for (p, a) in parts.iter().zip(all) {
        let len = a.metadata.shape.get(axis).copied().unwrap_or(0);
        out.push(InputEncoding {
            input: p.name.clone(),
            axis,
            start,
            len,
            fill_value: a.metadata.fill_value.clone(),
            attributes: encoding(a),
        });
        start += len;
    }
    Some(out)
}

/// The dimensions the arrays of `parts` have, sorted, each once.
fn dimensions(parts: &[VirtualDataset]) -> Vec<String> {
    let mut dims: Vec<String> = parts
        .iter()
        .flat_map(|p| p.arrays.values())
        .flat_map(|a| a.metadata.dimension_names.iter().cloned())
        .collect();
    dims.sort();
    dims.dedup();
    dims
}

/// Whether the inputs are concatenated along `dim` (they have it) rather than stacked
/// (they do not, and `stack` says so).
fn check_concat_dim(parts: &[VirtualDataset], dim: &str, stack: bool) -> Result<bool> {
    let has = parts.iter().any(|p| {
        p.arrays
            .values()
            .any(|a| a.metadata.dimension_names.iter().any(|d| d == dim))
    });
    match (has, stack) {
        (true, false) => Ok(true),
        (false, true) => Ok(false),
        (true, true) => Err(Error::Refused(format!(
            "--stack {dim}: the inputs already have a dimension {dim}; concatenate along it without --stack"
        ))),
        (false, false) => Err(Error::Refused(format!(
            "--concat-dim {dim}: no input has a dimension {dim} (they have {}); to stack the inputs along a new dimension {dim}, add --stack",
            dimensions(parts).join(", ")
        ))),
    }
}

/// The concat coordinate (every loaded numeric 1-d array named as `dim` along it) is
/// strictly monotonic over the inputs in their order: no repeated value, no overlap, nothing
/// going back.
fn check_concat_coordinate(parts: &[VirtualDataset], dim: &str) -> Result<()> {
    for key in parts[0].arrays.keys().filter(|k| base_name(k) == dim) {
        let arrays: Option<Vec<&ManifestArray>> = parts.iter().map(|p| p.arrays.get(key)).collect();
        let Some(arrays) = arrays else { continue };
        if arrays[0].metadata.dimension_names != [dim] {
            continue;
        }
        // Values in other units or calendars are not comparable: that difference is the one
        // to name (per-file reference dates in one calendar were re-based before).
        for (i, a) in arrays.iter().enumerate().skip(1) {
            // The calendar first: with it differing, units are not re-based and differ too.
            for &name in CONCAT_COORDINATE_ATTRIBUTES.iter().rev() {
                let (got, want) = (
                    a.metadata.attributes.get(name),
                    arrays[0].metadata.attributes.get(name),
                );
                if got != want {
                    return Err(mismatch(
                        parts,
                        i,
                        key,
                        &format!("attribute {name}"),
                        show(got),
                        show(want),
                    ));
                }
            }
        }
        let values: Option<Vec<Vec<f64>>> = arrays
            .iter()
            .map(|a| values_as_f64(&a.metadata.dtype, a.loaded_values()?))
            .collect();
        // Not loaded or not numbers (text labels): kept in the given order, unchecked.
        let Some(values) = values else { continue };
        let descending = is_descending(&values);
        let ordered = |a: f64, b: f64| if descending { b < a } else { a < b };
        let way = if descending {
            "decreasing"
        } else {
            "increasing"
        };
        let units = arrays[0]
            .metadata
            .attributes
            .get("units")
            .and_then(Value::as_str)
            .map_or_else(String::new, |u| format!(" ({u})"));
        for (i, v) in values.iter().enumerate() {
            if let Some(j) = (1..v.len()).find(|&j| !ordered(v[j - 1], v[j])) {
                return Err(Error::Refused(format!(
                    "{}: {key}: the {dim} coordinate is not strictly {way} within the input: {} then {} at elements {} and {j}{units}",
                    parts[i].name,
                    v[j - 1],
                    v[j],
                    j - 1
                )));
            }
        }
        for i in 1..values.len() {
            let (Some(&last), Some(&start)) = (values[i - 1].last(), values[i].first()) else {
                continue;
            };
            if !ordered(last, start) {
                let same = if values[i] == values[i - 1] {
                    format!(" (both have the same {dim} values: is one a copy of the other?)")
                } else {
                    String::new()
                };
                return Err(Error::Refused(format!(
                    "{}: {key}: starts at {dim} = {start}, not after {}'s last {dim} = {last}{units}: \
                     inputs that overlap along {dim} are not combined{same}; inputs are ordered by \
                     their first {dim} value and must not overlap",
                    parts[i].name,
                    parts[i - 1].name,
                )));
            }
        }
    }
    Ok(())
}

/// Arrays without the concat dimension (`keys`) hold the same values in every input: they
/// are written once.
fn compare_once(
    parts: &[VirtualDataset],
    keys: &[&str],
    dim: &str,
    options: &CombineOptions,
) -> Result<()> {
    if parts.len() < 2 || keys.is_empty() {
        return Ok(());
    }
    let differs = |i: usize, key: &str, what: String| {
        let drop = match options.dropped {
            Some(_) => format!(", or leave it out with --drop {}", base_name(key)),
            None => String::new(),
        };
        Error::Combine {
            file: parts[i].name.clone(),
            variable: key.to_string(),
            reason: format!(
                "{what} {}: an array without the concat dimension {dim} is written once, so it must be \
                 the same in every input; take the first input's values with --compat override{drop}",
                parts[0].name
            ),
        }
    };
    let mut read = Vec::with_capacity(keys.len());
    for key in keys {
        let f = &parts[0].arrays[*key].metadata;
        let mut whole = false;
        let mut same_codecs = true;
        for (i, p) in parts.iter().enumerate().skip(1) {
            let m = &p.arrays[*key].metadata;
            if m.dtype != f.dtype {
                return Err(differs(
                    i,
                    key,
                    format!("data type {} differs from {} in", m.dtype, f.dtype),
                ));
            }
            if m.shape != f.shape {
                return Err(differs(
                    i,
                    key,
                    format!("shape {:?} differs from {:?} in", m.shape, f.shape),
                ));
            }
            whole |= m.chunk_shape != f.chunk_shape;
            same_codecs &= m.codecs == f.codecs;
        }
        let how = match (whole, same_codecs) {
            (true, _) => compare::Read::Whole,
            (false, true) => compare::Read::Stored,
            (false, false) => compare::Read::Chunks,
        };
        read.push(((*key).to_string(), how));
    }
    let digests = compare::digests(parts, &read, options.threads)?;
    // A pool per input read here, dropped after it: its files are closed (see
    // `compare::digests`).
    let pool = || std::sync::Arc::new(crate::reader::FilePool::default());
    for (k, key) in keys.iter().enumerate() {
        let mut decoded_first = None;
        for i in 1..parts.len() {
            if digests[i][k] == digests[0][k] {
                continue;
            }
            // Stored bytes differ: the values may not (another compression level, a
            // checksum); decoded, they decide.
            if read[k].1 == compare::Read::Stored {
                let first = match decoded_first {
                    Some(d) => d,
                    None => compare::digest(&parts[0], key, &pool(), compare::Read::Chunks)?,
                };
                decoded_first = Some(first);
                if compare::digest(&parts[i], key, &pool(), compare::Read::Chunks)? == first {
                    continue;
                }
            }
            return Err(differs(i, key, "values differ from those in".into()));
        }
    }
    Ok(())
}

/// A concat dimension inferred from the inputs, and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferredDim {
    /// The dimension.
    pub dim: String,
    /// Why, in words ("the unlimited dimension of every input").
    pub why: String,
}

/// The concat dimension of inputs given without one: the dimension unlimited in every input
/// when there is exactly one, else the only dimension whose coordinate (a 1-d array named as
/// its dimension) differs between the inputs (among the unlimited ones, when several are).
/// `unlimited[i]` lists input `i`'s unlimited dimensions.
///
/// # Errors
/// [`Error::Usage`] naming the candidates (or saying there are none) and `--concat-dim` when
/// no single dimension qualifies; read errors of the coordinates compared.
pub fn infer_concat_dim(
    parts: &[VirtualDataset],
    unlimited: &[Vec<String>],
    threads: usize,
) -> Result<InferredDim> {
    let common: Vec<String> = unlimited
        .first()
        .map(|u| {
            u.iter()
                .filter(|d| unlimited.iter().all(|o| o.contains(d)))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if let [one] = common.as_slice() {
        return Ok(InferredDim {
            dim: one.clone(),
            why: "the unlimited dimension of every input".into(),
        });
    }
    let Some(first) = parts.first() else {
        return Err(Error::Usage("no input to combine".into()));
    };
    let mut differ: Vec<String> = Vec::new();
    let mut compared: Vec<(String, compare::Read)> = Vec::new();
    for (key, array) in &first.arrays {
        let m = &array.metadata;
        if m.dimension_names != [key.as_str()] {
            continue;
        }
        let others: Option<Vec<&ManifestArray>> = parts.iter().map(|p| p.arrays.get(key)).collect();
        let Some(others) = others else { continue };
        if others.iter().any(|o| o.metadata.shape != m.shape) {
            differ.push(key.clone());
        } else {
            let read = if others
                .iter()
                .any(|o| o.metadata.chunk_shape != m.chunk_shape)
            {
                compare::Read::Whole
            } else {
                compare::Read::Chunks
            };
            compared.push((key.clone(), read));
        }
    }
    let digests = compare::digests(parts, &compared, threads)?;
    for (k, (key, _)) in compared.iter().enumerate() {
        if digests.iter().any(|d| d[k] != digests[0][k]) {
            differ.push(key.clone());
        }
    }
    if !common.is_empty() {
        differ.retain(|d| common.contains(d));
    }
    differ.sort();
    let n = parts.len();
    match differ.as_slice() {
        [one] => Ok(InferredDim {
            dim: one.clone(),
            why: "the only dimension whose coordinate differs between the inputs".into(),
        }),
        [] => Err(Error::Usage(format!(
            "{n} inputs and no --concat-dim, and none can be inferred: no dimension is unlimited in \
             every input and no dimension coordinate differs between them; name the dimension to \
             concatenate along with --concat-dim DIM (with --stack to stack the inputs along a new one)"
        ))),
        several => Err(Error::Usage(format!(
            "{n} inputs and no --concat-dim, and it cannot be inferred: the coordinates of {} differ \
             between the inputs; name the one to concatenate along with --concat-dim",
            several.join(", ")
        ))),
    }
}

fn mismatch(
    parts: &[VirtualDataset],
    i: usize,
    key: &str,
    what: &str,
    got: String,
    expected: String,
) -> Error {
    Error::Mismatch(Box::new(Mismatch {
        file: parts[i].name.clone(),
        variable: key.to_string(),
        what: what.to_string(),
        got,
        expected,
        first: parts[0].name.clone(),
        hint: String::new(),
    }))
}

/// dtype, codecs, fill value, dimension names and CF encoding attributes agree with the first.
/// Why files that encode a variable differently are not joined, and the way around it.
const ENCODING_HINT: &str = "; one array has one fill value and one packing, so references cannot \
     join files that encode it differently (convert --decode-cf decodes each file with its own)";

fn with_hint(error: Error, hint: &str) -> Error {
    match error {
        Error::Mismatch(mut m) => {
            m.hint = hint.to_string();
            Error::Mismatch(m)
        }
        other => other,
    }
}

/// With `encoding_may_differ` (see [`CombineOptions::decode_per_input`]), the CF encoding
/// attributes and the fill value are not compared.
fn check_common(
    parts: &[VirtualDataset],
    key: &str,
    all: &[&ManifestArray],
    concat_coordinate: bool,
    encoding_may_differ: bool,
) -> Result<()> {
    let f = &all[0].metadata;
    for (i, a) in all.iter().enumerate().skip(1) {
        let m = &a.metadata;
        let err = |what: &str, got: String, expected: String| {
            mismatch(parts, i, key, what, got, expected)
        };
        if m.dtype != f.dtype {
            return Err(err("dtype", m.dtype.clone(), f.dtype.clone()));
        }
        if m.codecs != f.codecs {
            let show = |c: &[crate::codecs::Codec]| {
                Value::from(
                    c.iter()
                        .map(crate::codecs::Codec::to_v3)
                        .collect::<Vec<_>>(),
                )
                .to_string()
            };
            return Err(err("codecs", show(&m.codecs), show(&f.codecs)));
        }
        if m.dimension_names != f.dimension_names {
            return Err(err(
                "dimension names",
                format!("{:?}", m.dimension_names),
                format!("{:?}", f.dimension_names),
            ));
        }
        let mut attributes: Vec<&str> = if encoding_may_differ {
            Vec::new()
        } else {
            CF_ENCODING_ATTRIBUTES.to_vec()
        };
        if concat_coordinate {
            attributes.extend(CONCAT_COORDINATE_ATTRIBUTES);
        }
        for name in attributes {
            let (got, want) = (m.attributes.get(name), f.attributes.get(name));
            let same = match (got, want) {
                (Some(x), Some(y)) => same_value(x, y),
                (None, None) => true,
                _ => false,
            };
            if !same {
                let e = err(&format!("attribute {name}"), show(got), show(want));
                return Err(if CF_ENCODING_ATTRIBUTES.contains(&name) {
                    with_hint(e, ENCODING_HINT)
                } else {
                    e
                });
            }
        }
        if !encoding_may_differ && !same_value(&m.fill_value, &f.fill_value) {
            return Err(with_hint(
                err(
                    "fill value",
                    m.fill_value.to_string(),
                    f.fill_value.to_string(),
                ),
                ENCODING_HINT,
            ));
        }
    }
    Ok(())
}

fn concat(
    parts: &[VirtualDataset],
    key: &str,
    all: &[&ManifestArray],
    axis: usize,
    dim: &str,
    url_offsets: &[u32],
) -> Result<ManifestArray> {
    let f = &all[0].metadata;
    let mut shape = f.shape.clone();
    shape[axis] = 0;
    for (i, a) in all.iter().enumerate() {
        let s = &a.metadata.shape;
        let same_off_axis = s.len() == f.shape.len()
            && s.iter()
                .zip(&f.shape)
                .enumerate()
                .all(|(d, (x, y))| d == axis || x == y);
        if !same_off_axis {
            return Err(mismatch(
                parts,
                i,
                key,
                &format!("shape off the {dim} axis"),
                format!("{s:?}"),
                format!("{:?}", f.shape),
            ));
        }
        shape[axis] += s[axis];
    }
    let loaded: Option<Vec<&[u8]>> = all.iter().map(|a| a.loaded_values()).collect();
    if let Some(values) = loaded {
        let shapes: Vec<Vec<u64>> = all.iter().map(|a| a.metadata.shape.clone()).collect();
        let joined = concat_values(&values, &shapes, axis, f.element_size());
        let mut metadata = f.clone();
        metadata.shape = shape;
        return ManifestArray::loaded(metadata, joined);
    }
    for (i, a) in all.iter().enumerate().skip(1) {
        if a.metadata.chunk_shape != f.chunk_shape {
            return Err(mismatch(
                parts,
                i,
                key,
                "chunk shape",
                format!("{:?}", a.metadata.chunk_shape),
                format!("{:?}", f.chunk_shape),
            ));
        }
    }
    let chunk = f.chunk_shape[axis];
    for (i, a) in all.iter().enumerate().take(all.len() - 1) {
        let len = a.metadata.shape[axis];
        if len % chunk != 0 {
            return Err(Error::Combine {
                file: parts[i].name.clone(),
                variable: key.to_string(),
                reason: format!(
                    "{len} elements along {dim} is not a multiple of the chunk length {chunk}: only the \
                     last input may end in a partial chunk (references cannot express a partial chunk \
                     in the middle of an array); put this input last, or rechunk/copy this variable"
                ),
            });
        }
    }
    let mut manifests = Vec::with_capacity(all.len());
    for (a, &off) in all.iter().zip(url_offsets) {
        let mut m = a.manifest.clone();
        m.shift_paths(off)?;
        manifests.push(m);
    }
    let refs: Vec<&ChunkManifest> = manifests.iter().collect();
    let manifest = ChunkManifest::concat(&refs, axis)?;
    let mut metadata = f.clone();
    metadata.shape = shape;
    Ok(ManifestArray { metadata, manifest })
}

fn stack(
    parts: &[VirtualDataset],
    key: &str,
    all: &[&ManifestArray],
    dim: &str,
    url_offsets: &[u32],
) -> Result<ManifestArray> {
    let f = &all[0].metadata;
    for (i, a) in all.iter().enumerate().skip(1) {
        if a.metadata.shape != f.shape {
            return Err(mismatch(
                parts,
                i,
                key,
                "shape",
                format!("{:?}", a.metadata.shape),
                format!("{:?}", f.shape),
            ));
        }
        if a.metadata.chunk_shape != f.chunk_shape {
            return Err(mismatch(
                parts,
                i,
                key,
                "chunk shape",
                format!("{:?}", a.metadata.chunk_shape),
                format!("{:?}", f.chunk_shape),
            ));
        }
    }
    let mut manifests = Vec::with_capacity(all.len());
    for (a, &off) in all.iter().zip(url_offsets) {
        let mut m = a.manifest.clone();
        m.shift_paths(off)?;
        manifests.push(m);
    }
    let refs: Vec<&ChunkManifest> = manifests.iter().collect();
    let manifest = ChunkManifest::stack(&refs)?;
    let mut metadata = f.clone();
    metadata.shape.insert(0, all.len() as u64);
    metadata.chunk_shape.insert(0, 1);
    metadata.dimension_names.insert(0, dim.to_string());
    Ok(ManifestArray { metadata, manifest })
}

fn identical(parts: &[VirtualDataset], key: &str, all: &[&ManifestArray]) -> Result<ManifestArray> {
    let f = all[0];
    let first_values = f.loaded_values().ok_or_else(|| Error::Combine {
        file: parts[0].name.clone(),
        variable: key.to_string(),
        reason: "an identical-dims variable must be loaded to be compared (scan with it in ScanOptions::load)".into(),
    })?;
    for (i, a) in all.iter().enumerate().skip(1) {
        if a.metadata.dtype != f.metadata.dtype {
            return Err(mismatch(
                parts,
                i,
                key,
                "dtype",
                a.metadata.dtype.clone(),
                f.metadata.dtype.clone(),
            ));
        }
        if a.metadata.shape != f.metadata.shape {
            return Err(mismatch(
                parts,
                i,
                key,
                "shape",
                format!("{:?}", a.metadata.shape),
                format!("{:?}", f.metadata.shape),
            ));
        }
        let values = a.loaded_values().ok_or_else(|| Error::Combine {
            file: parts[i].name.clone(),
            variable: key.to_string(),
            reason: "an identical-dims variable must be loaded to be compared".into(),
        })?;
        if values != first_values {
            let elem = f.metadata.element_size().max(1);
            let at = values
                .iter()
                .zip(first_values)
                .position(|(x, y)| x != y)
                .map_or(0, |b| b / elem);
            return Err(mismatch(
                parts,
                i,
                key,
                "values",
                format!("a different value at element {at}"),
                "the same values".into(),
            ));
        }
    }
    Ok(f.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::ArrayMetadata;
    use crate::codecs::Codec;
    use crate::dense::first_as_f64;

    fn array(shape: u64, chunk: u64, scale: f64) -> Result<ManifestArray> {
        let mut attributes = Map::new();
        attributes.insert("scale_factor".into(), Value::from(scale));
        let metadata = ArrayMetadata {
            shape: vec![shape, 2],
            dtype: "<i2".into(),
            chunk_shape: vec![chunk, 2],
            fill_value: Value::from(-1),
            codecs: vec![Codec::bytes(Some(chunkmill_hdf5::ByteOrder::Little))],
            dimension_names: vec!["time".into(), "x".into()],
            attributes,
            attribute_types: BTreeMap::new(),
        };
        let mut manifest = ChunkManifest::new(vec![shape.div_ceil(chunk), 1])?;
        for i in 0..manifest.len() {
            manifest.set_reference(i, 0, 100 * i as u64, 8)?;
        }
        Ok(ManifestArray { metadata, manifest })
    }

    fn dataset(name: &str, a: ManifestArray) -> VirtualDataset {
        let mut arrays = BTreeMap::new();
        arrays.insert("v".to_string(), a);
        VirtualDataset {
            name: name.into(),
            urls: vec![name.into()],
            groups: BTreeMap::new(),
            arrays,
            encodings: BTreeMap::new(),
        }
    }

    fn opts() -> CombineOptions {
        CombineOptions {
            concat_dim: Some("time".into()),
            ..CombineOptions::default()
        }
    }

    /// A 1-d float64 array along `dim`, loaded with `values`.
    fn coordinate(dim: &str, values: &[f64]) -> Result<ManifestArray> {
        ManifestArray::loaded(
            ArrayMetadata {
                shape: vec![values.len() as u64],
                dtype: "<f8".into(),
                chunk_shape: vec![values.len() as u64],
                fill_value: Value::from(0.0),
                codecs: vec![Codec::bytes(Some(chunkmill_hdf5::ByteOrder::Little))],
                dimension_names: vec![dim.into()],
                attributes: Map::new(),
                attribute_types: std::collections::BTreeMap::new(),
            },
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// Input `name`: `v(time, x)` of `times.len()` steps, the loaded `time` coordinate, and a
    /// loaded `elev(x)` holding `elev`.
    fn timed(name: &str, times: &[f64], elev: &[f64]) -> Result<VirtualDataset> {
        let mut d = dataset(name, array(times.len() as u64, 1, 0.1)?);
        d.arrays.insert("time".into(), coordinate("time", times)?);
        d.arrays.insert("elev".into(), coordinate("x", elev)?);
        Ok(d)
    }

    fn message(r: Result<VirtualDataset>) -> String {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn concat_joins_manifests_and_url_tables() -> Result<()> {
        let out = combine(
            vec![
                dataset("a", array(4, 2, 0.1)?),
                dataset("b", array(3, 2, 0.1)?),
            ],
            &opts(),
        )?;
        let v = &out.arrays["v"];
        assert_eq!(v.metadata.shape, vec![7, 2]);
        assert_eq!(v.manifest.path_ids(), &[0, 0, 1, 1]);
        assert_eq!(out.urls, vec!["a", "b"]);
        Ok(())
    }

    #[test]
    fn differing_scale_factor_is_named() -> Result<()> {
        let err = combine(
            vec![
                dataset("a", array(4, 2, 0.1)?),
                dataset("b", array(4, 2, 0.2)?),
            ],
            &opts(),
        )
        .err()
        .map(|e| e.to_string());
        let want = format!(
            "b: v: attribute scale_factor differs: got 0.2, expected 0.1 (as in a){ENCODING_HINT}"
        );
        assert_eq!(err.as_deref(), Some(want.as_str()));
        // A job that decodes each input itself gets each input's part and encoding instead.
        let out = combine(
            vec![
                dataset("a", array(4, 2, 0.1)?),
                dataset("b", array(4, 2, 0.2)?),
            ],
            &CombineOptions {
                decode_per_input: true,
                ..opts()
            },
        )?;
        let parts = &out.encodings["v"];
        let seen: Vec<(&str, u64, u64, Option<f64>)> = parts
            .iter()
            .map(|p| {
                let scale = p.attributes.get("scale_factor").and_then(Value::as_f64);
                (p.input.as_str(), p.start, p.len, scale)
            })
            .collect();
        assert_eq!(seen, [("a", 0, 4, Some(0.1)), ("b", 4, 4, Some(0.2))]);
        Ok(())
    }

    #[test]
    fn a_partial_chunk_before_the_last_input_is_refused() -> Result<()> {
        let err = combine(
            vec![
                dataset("a", array(3, 2, 0.1)?),
                dataset("b", array(4, 2, 0.1)?),
            ],
            &opts(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.starts_with("a: v: 3 elements along time is not a multiple of the chunk length 2"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn stacking_adds_the_dimension() -> Result<()> {
        let o = CombineOptions {
            concat_dim: Some("member".into()),
            stack: true,
            ..CombineOptions::default()
        };
        let out = combine(
            vec![
                dataset("a", array(4, 2, 0.1)?),
                dataset("b", array(4, 2, 0.1)?),
            ],
            &o,
        )?;
        let v = &out.arrays["v"];
        assert_eq!(v.metadata.shape, vec![2, 4, 2]);
        assert_eq!(v.metadata.chunk_shape, vec![1, 2, 2]);
        assert_eq!(v.metadata.dimension_names[0], "member");
        Ok(())
    }

    #[test]
    fn concat_dim_typo_is_refused_naming_the_dimensions() -> Result<()> {
        let o = CombineOptions {
            concat_dim: Some("tiem".into()),
            ..CombineOptions::default()
        };
        let err = message(combine(
            vec![
                timed("a", &[0.0, 1.0], &[5.0, 6.0])?,
                timed("b", &[2.0, 3.0], &[5.0, 6.0])?,
            ],
            &o,
        ));
        assert_eq!(
            err,
            "--concat-dim tiem: no input has a dimension tiem (they have time, x); to stack the \
             inputs along a new dimension tiem, add --stack"
        );
        Ok(())
    }

    #[test]
    fn stack_does_not_label_every_input_with_the_first_inputs_times() -> Result<()> {
        let o = CombineOptions {
            concat_dim: Some("member".into()),
            stack: true,
            ..CombineOptions::default()
        };
        let err = message(combine(
            vec![
                timed("a", &[0.0, 1.0], &[5.0, 6.0])?,
                timed("b", &[2.0, 3.0], &[5.0, 6.0])?,
            ],
            &o,
        ));
        assert!(
            err.starts_with("b: time: values differ from those in a: an array without the concat dimension member"),
            "{err}"
        );
        // Members that share their times stack, with no coordinate for the new dimension.
        let out = combine(
            vec![
                timed("a", &[0.0, 1.0], &[5.0, 6.0])?,
                timed("b", &[0.0, 1.0], &[5.0, 6.0])?,
            ],
            &o,
        )?;
        assert_eq!(out.arrays["v"].metadata.shape, vec![2, 2, 2]);
        assert!(!out.arrays.contains_key("member"));
        Ok(())
    }

    #[test]
    fn stack_of_a_dimension_the_inputs_have_is_refused() -> Result<()> {
        let o = CombineOptions {
            concat_dim: Some("time".into()),
            stack: true,
            ..CombineOptions::default()
        };
        let err = message(combine(
            vec![timed("a", &[0.0], &[5.0])?, timed("b", &[1.0], &[5.0])?],
            &o,
        ));
        assert!(
            err.starts_with("--stack time: the inputs already have"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn overlapping_time_ranges_are_refused() -> Result<()> {
        let err = message(combine(
            vec![
                timed("a", &[0.0, 1.0, 2.0], &[5.0, 6.0])?,
                timed("b", &[2.0, 3.0], &[5.0, 6.0])?,
            ],
            &opts(),
        ));
        assert!(
            err.starts_with(
                "b: time: starts at time = 2, not after a's last time = 2: inputs that overlap"
            ),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn duplicate_time_ranges_are_refused_as_copies() -> Result<()> {
        let err = message(combine(
            vec![
                timed("a", &[0.0, 1.0], &[5.0, 6.0])?,
                timed("b", &[0.0, 1.0], &[5.0, 6.0])?,
            ],
            &opts(),
        ));
        assert!(
            err.contains("(both have the same time values: is one a copy of the other?)"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn a_time_axis_going_backwards_within_an_input_is_refused() -> Result<()> {
        let err = message(combine(
            vec![
                timed("a", &[0.0, 2.0, 1.0], &[5.0, 6.0])?,
                timed("b", &[3.0, 4.0], &[5.0, 6.0])?,
            ],
            &opts(),
        ));
        assert_eq!(
            err,
            "a: time: the time coordinate is not strictly increasing within the input: 2 then 1 at elements 1 and 2"
        );
        Ok(())
    }

    #[test]
    fn inputs_out_of_order_are_ordered_by_their_first_value() -> Result<()> {
        let mut parts = vec![
            timed("b", &[2.0, 3.0], &[5.0, 6.0])?,
            timed("a", &[0.0, 1.0], &[5.0, 6.0])?,
        ];
        assert!(order_by_coordinate(&mut parts, "time"));
        assert_eq!(parts[0].name, "a");
        // Decreasing in every input: ordered decreasing, as xarray does.
        let mut parts = vec![
            timed("a", &[1.0, 0.0], &[5.0, 6.0])?,
            timed("b", &[3.0, 2.0], &[5.0, 6.0])?,
        ];
        assert!(order_by_coordinate(&mut parts, "time"));
        assert_eq!(parts[0].name, "b");
        let out = combine(parts, &opts())?;
        assert_eq!(
            out.arrays["time"].loaded_values(),
            Some(
                &[3.0f64, 2.0, 1.0, 0.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>()[..]
            )
        );
        Ok(())
    }

    #[test]
    fn a_differing_variable_without_the_concat_dim_is_refused() -> Result<()> {
        let parts = || -> Result<Vec<VirtualDataset>> {
            Ok(vec![
                timed("a", &[0.0, 1.0], &[5.0, 6.0])?,
                timed("b", &[2.0, 3.0], &[5.0, 7.0])?,
            ])
        };
        let err = message(combine(parts()?, &opts()));
        assert_eq!(
            err,
            "b: elev: values differ from those in a: an array without the concat dimension time is \
             written once, so it must be the same in every input; take the first input's values \
             with --compat override"
        );
        let with_drop = CombineOptions {
            dropped: Some(Vec::new()),
            ..opts()
        };
        assert!(
            message(combine(parts()?, &with_drop)).ends_with(", or leave it out with --drop elev")
        );
        let dropped = CombineOptions {
            dropped: Some(vec!["elev".into()]),
            ..opts()
        };
        assert!(combine(parts()?, &dropped).is_ok());
        let first = CombineOptions {
            compat: Compat::Override,
            ..opts()
        };
        let out = combine(parts()?, &first)?;
        assert_eq!(
            out.arrays["elev"].loaded_values(),
            Some(
                &[5.0f64, 6.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>()[..]
            )
        );
        Ok(())
    }

    #[test]
    fn the_concat_dim_is_inferred_or_the_candidates_named() -> Result<()> {
        let parts = vec![
            timed("a", &[0.0, 1.0], &[5.0, 6.0])?,
            timed("b", &[2.0, 3.0], &[5.0, 6.0])?,
        ];
        let unlimited = vec![vec!["time".to_string()], vec!["time".to_string()]];
        assert_eq!(infer_concat_dim(&parts, &unlimited, 1)?.dim, "time");
        let none = vec![Vec::new(), Vec::new()];
        let inferred = infer_concat_dim(&parts, &none, 1)?;
        assert_eq!(inferred.dim, "time");
        assert_eq!(
            inferred.why,
            "the only dimension whose coordinate differs between the inputs"
        );
        let mut ambiguous = parts.clone();
        ambiguous[1]
            .arrays
            .insert("x".into(), coordinate("x", &[1.0, 2.0])?);
        ambiguous[0]
            .arrays
            .insert("x".into(), coordinate("x", &[1.0, 3.0])?);
        let err = infer_concat_dim(&ambiguous, &none, 1)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("the coordinates of time, x differ between the inputs; name the one to concatenate along with --concat-dim"),
            "{err}"
        );
        let same = vec![parts[0].clone(), parts[0].clone()];
        let err = infer_concat_dim(&same, &none, 1)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no dimension coordinate differs"), "{err}");
        Ok(())
    }

    #[test]
    fn first_values_decode() {
        assert_eq!(first_as_f64(">f8", &2.5f64.to_be_bytes()), Some(2.5));
        assert_eq!(first_as_f64("<i2", &(-3i16).to_le_bytes()), Some(-3.0));
        assert_eq!(first_as_f64("|u1", &[7]), Some(7.0));
    }
}
