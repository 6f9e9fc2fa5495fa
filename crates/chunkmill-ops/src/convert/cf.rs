//! CF encoding under `--decode-cf`: the numbers of CF attributes, the value map that decodes
//! values as xarray does, and per-input decoding where the files of a collection encode one
//! variable differently (their own `_FillValue`, `missing_value`, `scale_factor` or
//! `add_offset`): each file's part is decoded with its own encoding on the way, as
//! `open_mfdataset` decodes each file before concatenating.

use std::collections::BTreeMap;

use chunkmill_grid::Grid;
use chunkmill_manifest::InputEncoding;
use chunkmill_plan::{AxisWindow, Endpoint, ValueMap};
use chunkmill_store::DataType;
use serde_json::{Map, Value};

use crate::convert::selection::window_axis;

use crate::values::numeric;
use crate::OpsError;

pub(crate) fn number(value: &Value) -> Option<f64> {
    match value {
        Value::String(s) if s == "NaN" => Some(f64::NAN),
        other => other.as_f64(),
    }
}

pub(crate) fn numbers(value: Option<&Value>) -> Vec<f64> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(number).collect(),
        Some(v) => number(v).into_iter().collect(),
        None => Vec::new(),
    }
}

/// A CF attribute's number and the numpy type xarray reads it as: the type the file stores
/// (NetCDF/HDF5), or for JSON attributes (references, Zarr) what Python makes of the number
/// (int64 for an integer, float64 otherwise). A one-element list counts as its element, as
/// xarray takes `.item()` of it.
pub(crate) fn typed_attribute(
    attributes: &Map<String, Value>,
    types: Option<&BTreeMap<String, String>>,
    name: &str,
) -> Option<(f64, DataType)> {
    let value = match attributes.get(name)? {
        Value::Array(items) if items.len() == 1 => &items[0],
        other => other,
    };
    let number = number(value)?;
    let stored = types
        .and_then(|t| t.get(name))
        .and_then(|t| numeric(t).ok());
    let json = if value.is_i64() || value.is_u64() {
        DataType::Int(8)
    } else {
        DataType::Float(8)
    };
    Some((number, stored.unwrap_or(json)))
}

/// How values encoded with `attributes` decode, and the range they decode to.
pub(crate) struct Decoding {
    pub(crate) map: ValueMap,
    pub(crate) compute: DataType,
    pub(crate) range: (f64, f64),
}

/// The map that unpacks and masks values of `dtype` encoded with `attributes` (their
/// `scale_factor`, `add_offset`, `_FillValue`, `missing_value`), computed in the type xarray
/// computes in. `range` is what the stored values may hold: unpacked with them unless it came
/// from `actual_range` (already in unpacked units).
pub(crate) fn decoding(
    key: &str,
    source_type: &DataType,
    attributes: &Map<String, Value>,
    types: Option<&BTreeMap<String, String>>,
    range: (f64, f64),
    range_is_unpacked: bool,
) -> Result<Decoding, OpsError> {
    let (scale, scale_type) = typed_attribute(attributes, types, "scale_factor").unzip();
    let (offset, offset_type) = typed_attribute(attributes, types, "add_offset").unzip();
    let compute = crate::values::decoded_type(source_type, scale_type, offset_type)
        .map_err(|e| OpsError::Refused(format!("--decode-cf: '{key}': {e}")))?;
    let mut missing = numbers(attributes.get("_FillValue"));
    missing.extend(numbers(attributes.get("missing_value")));
    let range = if range_is_unpacked {
        range
    } else {
        let unpack = |v: f64| v * scale.unwrap_or(1.0) + offset.unwrap_or(0.0);
        let (a, b) = (unpack(range.0), unpack(range.1));
        (a.min(b), a.max(b))
    };
    Ok(Decoding {
        map: ValueMap {
            from: source_type.to_string(),
            to: compute.to_string(),
            missing,
            scale,
            offset,
            compute: Some(compute.to_string()),
        },
        compute,
        range,
    })
}

/// One input's part of an array along the concat axis and the map that decodes it.
#[derive(Clone, Debug)]
pub(crate) struct PartDecoding {
    pub(crate) axis: usize,
    pub(crate) start: u64,
    pub(crate) len: u64,
    pub(crate) map: ValueMap,
}

/// Every input's part decoded to one output type, and the range of the decoded values.
pub(crate) struct InputDecodings {
    pub(crate) parts: Vec<PartDecoding>,
    pub(crate) out: DataType,
    pub(crate) range: (f64, f64),
}

/// Each input's decoding (see [`decoding`]), all to one output type: the first's compute
/// type when every input computes in it, else float64 (what numpy's promotion of the
/// concatenated parts gives).
pub(crate) fn per_input(
    key: &str,
    source_type: &DataType,
    encodings: &[InputEncoding],
    types: Option<&BTreeMap<String, String>>,
    range: (f64, f64),
    range_is_unpacked: bool,
) -> Result<InputDecodings, OpsError> {
    let mut parts = Vec::with_capacity(encodings.len());
    let mut computes = Vec::with_capacity(encodings.len());
    let mut union = (f64::INFINITY, f64::NEG_INFINITY);
    for e in encodings {
        let d = decoding(
            key,
            source_type,
            &e.attributes,
            types,
            range,
            range_is_unpacked,
        )
        .map_err(|err| err.about(&e.input))?;
        union = (union.0.min(d.range.0), union.1.max(d.range.1));
        computes.push(d.compute);
        parts.push(PartDecoding {
            axis: e.axis,
            start: e.start,
            len: e.len,
            map: d.map,
        });
    }
    let out = match computes.first() {
        Some(first) if computes.iter().all(|c| c == first) => first.clone(),
        _ => DataType::Float(8),
    };
    for p in &mut parts {
        p.map.to = out.to_string();
    }
    Ok(InputDecodings {
        parts,
        out,
        range: union,
    })
}

/// `plain` seen through `axes` with each input's part decoded by its own map: one window per
/// input part that the selection meets, joined along the concat axis (in reverse order when
/// that axis is read backwards). Input parts end on chunk boundaries (the combine requires
/// it), so every window's chunks stay inside one source chunk, as one window's would.
pub(crate) fn windows_per_input(
    plain: &Endpoint,
    axes: &[AxisWindow],
    chunks: &[u64],
    parts: &[PartDecoding],
) -> Result<Endpoint, String> {
    let Some(axis) = parts.first().map(|p| p.axis) else {
        return Err("no input part to decode".into());
    };
    let whole = axes
        .get(axis)
        .ok_or("the concat axis is outside the array")?;
    let grid_of = |axes: &[AxisWindow]| -> Result<Grid, String> {
        Ok(Grid::new(
            axes.iter()
                .zip(chunks)
                .map(|(w, &size)| window_axis(size, w))
                .collect::<Result<Vec<_>, _>>()?,
        ))
    };
    let mut windows = Vec::with_capacity(parts.len());
    for p in parts {
        let start = p.start.max(whole.start);
        let end = (p.start + p.len).min(whole.start + whole.len);
        if start >= end {
            continue;
        }
        let mut own = axes.to_vec();
        own[axis] = AxisWindow {
            start,
            len: end - start,
            reverse: whole.reverse,
        };
        let grid = grid_of(&own)?;
        windows.push(Endpoint::Window {
            source: Box::new(plain.clone()),
            axes: own,
            values: Some(p.map.clone()),
            grid,
        });
    }
    if whole.reverse {
        windows.reverse();
    }
    Ok(Endpoint::Concat {
        axis,
        parts: windows,
        grid: grid_of(axes)?,
    })
}
