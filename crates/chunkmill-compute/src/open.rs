//! Opening the inputs of a computation: `NAME=URL#ARRAY` names one array, `NAME=URL` every
//! array of a store by its own name; each array's 1-d coordinates (arrays named after its
//! dimensions) come along.

use std::collections::BTreeMap;

use chunkmill_grid::{Grid, Region};
use chunkmill_plan::Endpoint;
use chunkmill_store::zarr::{self, ArrayInfo, Node};
use chunkmill_store::Store;
use serde_json::Value;

use crate::check::Inputs;
use crate::dtype::DType;
use crate::kernel::{Read, ReadAxis, Unpack};
use crate::model::{Pick, Source};

/// One `--input`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    pub name: String,
    pub url: String,
    pub array: Option<String>,
}

impl InputSpec {
    /// Parse `NAME=URL[#ARRAY]`.
    ///
    /// # Errors
    /// What is malformed.
    pub fn parse(text: &str) -> Result<InputSpec, String> {
        let (name, rest) = text
            .split_once('=')
            .ok_or_else(|| format!("--input '{text}': expected NAME=URL[#ARRAY]"))?;
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!(
                "--input '{text}': '{name}' is not a name (letters, digits, '_')"
            ));
        }
        let (url, array) = match rest.rsplit_once('#') {
            Some((u, a)) => (u.to_string(), Some(a.to_string())),
            None => (rest.to_string(), None),
        };
        if url.is_empty() {
            return Err(format!("--input '{text}': no URL"));
        }
        Ok(InputSpec {
            name: name.to_string(),
            url,
            array,
        })
    }
}

fn last(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) if s == "NaN" => Some(f64::NAN),
        other => other.as_f64(),
    }
}

/// A source from an array's metadata, decoded as xarray decodes it.
fn source(url: &str, info: &ArrayInfo) -> Result<Source, String> {
    let at = format!("{url}#{}", info.path);
    let stored = DType::of(&info.dtype)
        .ok_or_else(|| format!("{at}: data type {} is not supported by compute", info.dtype))?;
    let dims: Vec<String> = match &info.dimension_names {
        Some(names) if names.iter().all(Option::is_some) => {
            names.iter().flatten().cloned().collect()
        }
        _ if info.shape.is_empty() => Vec::new(),
        _ => {
            return Err(format!(
                "{at}: the array has no dimension names (_ARRAY_DIMENSIONS or dimension_names)"
            ))
        }
    };
    refuse_unsigned_view(&at, stored, &info.attributes)?;
    let unpack = unpacking(&at, &info.attributes)?;
    // xarray's mask: `_FillValue` and `missing_value`, and a v2 array's fill_value.
    // Each may be a list (netCDF tools write one-element lists; `missing_value` may name
    // several): xarray masks every value in it.
    let mut missing: Vec<f64> = ["_FillValue", "missing_value"]
        .iter()
        .filter_map(|k| info.attributes.get(*k))
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        })
        .filter_map(number)
        .collect();
    if info.zarr_format == 2 {
        missing.extend(number(&info.fill_value));
    }
    missing.retain(|v| !v.is_nan());
    missing.dedup();
    let dtype = if unpack.is_some() {
        DType::Float64
    } else if stored.is_int() && !missing.is_empty() {
        stored.float_of()
    } else {
        stored
    };
    if stored == DType::Bool {
        missing.clear();
    }
    // Decoded, as xarray moves them from the attributes to the encoding: an output keeps no
    // packing for a reader to apply a second time.
    let mut attrs = info.attributes.clone();
    if unpack.is_some() {
        attrs.remove("scale_factor");
        attrs.remove("add_offset");
    }
    Ok(Source {
        url: url.to_string(),
        path: info.path.clone(),
        dtype,
        stored,
        shape: info.shape.clone(),
        chunks: info.chunks.clone(),
        dims,
        attrs,
        missing,
        unpack,
    })
}

/// Refuses `_Unsigned` asking for the integers stored to be read with the other signedness
/// (netCDF-3's bytes, often packed): xarray reads them so, compute would read other values.
fn refuse_unsigned_view(
    at: &str,
    stored: DType,
    attrs: &serde_json::Map<String, Value>,
) -> Result<(), String> {
    let Some(flag) = attrs.get("_Unsigned") else {
        return Ok(());
    };
    let signed = matches!(
        stored,
        DType::Int8 | DType::Int16 | DType::Int32 | DType::Int64
    );
    let other_signedness = stored.is_int()
        && match flag.as_str() {
            Some("true") => signed,
            Some("false") => !signed,
            _ => false,
        };
    if other_signedness {
        return Err(format!(
            "{at}: _Unsigned={flag} asks for its {} values to be read with the other signedness; compute does not read them so yet",
            stored.name()
        ));
    }
    Ok(())
}

/// The CF packing of an array with these attributes, as xarray decodes a Zarr array: its JSON
/// numbers read as Python ints and floats (a one-element list as its element), so values
/// unpack into float64 (`_choose_float_dtype`: a float scale, an offset of any kind) — except
/// under an integer scale alone, which xarray "unpacks" into an integer type: refused.
fn unpacking(at: &str, attrs: &serde_json::Map<String, Value>) -> Result<Option<Unpack>, String> {
    let get = |key: &str| -> Result<Option<(f64, bool)>, String> {
        let Some(value) = attrs.get(key) else {
            return Ok(None);
        };
        let value = match value {
            Value::Array(items) if items.len() == 1 => &items[0],
            other => other,
        };
        match number(value) {
            Some(v) if v.is_finite() => Ok(Some((v, value.is_i64() || value.is_u64()))),
            _ => Err(format!(
                "{at}: the CF attribute {key} is {value}, not a finite number"
            )),
        }
    };
    let (scale, offset) = (get("scale_factor")?, get("add_offset")?);
    if let (Some((_, true)), None) = (scale, offset) {
        return Err(format!(
            "{at}: its scale_factor is an integer and it has no add_offset: xarray would \
             unpack it into an integer type; compute refuses rather than guess"
        ));
    }
    Ok((scale.is_some() || offset.is_some()).then(|| Unpack {
        scale: scale.map(|s| s.0),
        offset: offset.map(|o| o.0),
    }))
}

/// Open every input.
///
/// # Errors
/// A missing store or array, an array compute cannot read, or a name given twice.
pub fn open_inputs(specs: &[InputSpec]) -> Result<Inputs, String> {
    let mut inputs = Inputs::default();
    for spec in specs {
        let store = Store::open(&spec.url).map_err(|e| e.to_string())?;
        let nodes = zarr::list_nodes(&store).map_err(|e| e.to_string())?;
        let arrays: Vec<ArrayInfo> = nodes
            .into_iter()
            .filter_map(|n| match n {
                Node::Array(a) => Some(a),
                _ => None,
            })
            .collect();
        if arrays.is_empty() {
            return Err(format!("{}: no Zarr array found", spec.url));
        }
        let chosen: Vec<(String, &ArrayInfo)> = match &spec.array {
            Some(a) => {
                let found = arrays
                    .iter()
                    .find(|x| x.path == a.trim_matches('/') || last(&x.path) == a)
                    .ok_or_else(|| {
                        let names: Vec<&str> = arrays.iter().map(|x| x.path.as_str()).collect();
                        format!("{}: no array '{a}'; arrays: {}", spec.url, names.join(", "))
                    })?;
                vec![(spec.name.clone(), found)]
            }
            // A store that is one array has no name of its own for it: it takes the input's.
            None => arrays
                .iter()
                .map(|a| match last(&a.path) {
                    "" => (spec.name.clone(), a),
                    own => (own.to_string(), a),
                })
                .collect(),
        };
        for (name, info) in chosen {
            if inputs.names.contains_key(&name) {
                return Err(format!("--input: the name '{name}' is given twice"));
            }
            let src = source(store.url(), info)?;
            let mut coords = BTreeMap::new();
            for (axis, dim) in src.dims.iter().enumerate() {
                let coord = arrays.iter().find(|a| {
                    last(&a.path) == dim
                        && a.shape.len() == 1
                        && a.shape[0] == src.shape[axis]
                        && a.dimension_names
                            .as_ref()
                            .is_some_and(|d| d.first() == Some(&Some(dim.clone())))
                });
                if let Some(c) = coord {
                    let id = match inputs
                        .sources
                        .iter()
                        .position(|s| s.url == store.url() && s.path == c.path)
                    {
                        Some(i) => i,
                        None => {
                            inputs.sources.push(source(store.url(), c)?);
                            inputs.sources.len() - 1
                        }
                    };
                    coords.insert(dim.clone(), id);
                }
            }
            let id = match inputs
                .sources
                .iter()
                .position(|s| s.url == src.url && s.path == src.path)
            {
                Some(i) => i,
                None => {
                    inputs.sources.push(src);
                    inputs.sources.len() - 1
                }
            };
            inputs.names.insert(name, (id, coords));
        }
    }
    Ok(inputs)
}

/// The values of a 1-d source seen through `pick` (a coordinate, for `sel`).
///
/// # Errors
/// When it cannot be read.
pub fn read_coordinate(source: &Source, pick: &Pick) -> Result<Vec<f64>, String> {
    let (start, step, len) = match pick {
        Pick::Keep {
            start, step, len, ..
        } => (*start, *step, *len),
        Pick::Fixed(i) => (*i, 1, 1),
    };
    let grid = Grid::regular(&source.shape, &source.chunks).map_err(|e| e.to_string())?;
    let endpoint = Endpoint::Zarr {
        url: source.url.clone(),
        path: source.path.clone(),
        grid,
    };
    let read = Read {
        input: 0,
        dtype: source.stored,
        missing: source.missing.clone(),
        unpack: source.unpack,
        axes: vec![ReadAxis {
            to: Some(0),
            start,
            step,
            index: None,
        }],
    };
    if len == 0 {
        return Ok(Vec::new());
    }
    crate::task::read_block(
        &endpoint,
        &read,
        &Region::new(std::iter::once(0..len).collect()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn cf_packing_reads_as_xarray_reads_json_attributes() {
        let unpack = |v: Value| unpacking("a", &attrs(v));
        assert_eq!(unpack(json!({"units": "K"})), Ok(None));
        assert_eq!(
            unpack(json!({"scale_factor": 0.5, "add_offset": [10.0]})),
            Ok(Some(Unpack {
                scale: Some(0.5),
                offset: Some(10.0)
            }))
        );
        // An integer scale with an offset unpacks into float64, as xarray's does.
        assert_eq!(
            unpack(json!({"scale_factor": 2, "add_offset": 1})),
            Ok(Some(Unpack {
                scale: Some(2.0),
                offset: Some(1.0)
            }))
        );
        assert!(unpack(json!({"scale_factor": 2})).is_err_and(|e| e.contains("integer")));
        assert!(unpack(json!({"add_offset": "ten"})).is_err_and(|e| e.contains("add_offset")));
        assert!(unpack(json!({"scale_factor": [1.0, 2.0]})).is_err());
        assert!(unpack(json!({"scale_factor": "NaN"})).is_err());
    }

    #[test]
    fn unpacking_keeps_nan_and_rounds_each_step() {
        let mut values = [f64::NAN, 3.0, -32767.0];
        Unpack {
            scale: Some(0.1),
            offset: Some(280.0),
        }
        .apply(&mut values);
        assert!(values[0].is_nan());
        // No fused multiply-add: the product is rounded before the offset is added.
        assert_eq!(values[1].to_bits(), ((3.0f64 * 0.1) + 280.0).to_bits());
        assert_eq!(values[2], -32767.0 * 0.1 + 280.0);
    }
}
