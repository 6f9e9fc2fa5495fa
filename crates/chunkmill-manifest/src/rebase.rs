//! Per-file reference dates: daily files whose time coordinate reads `hours since <that
//! day>` are joined as xarray joins them (it decodes each file's times, then concatenates).
//! The concat coordinate and its CF bounds variable are loaded, so their values are
//! re-based to the first input's units here, before the inputs are ordered and checked;
//! the units then agree and the joined coordinate is written (convert) or inlined
//! (references) in one unit, as kerchunk's MultiZarrToZarr does. Calendars must still agree:
//! the combine's checks refuse a difference.

use serde_json::Value;

use crate::array::{base_name, ManifestArray, VirtualDataset};
use crate::cftime::TimeUnits;
use crate::dense::{f64_as_values, values_as_f64};
use crate::error::{Error, Result};

fn text<'a>(array: &'a ManifestArray, name: &str) -> Option<&'a str> {
    array.metadata.attributes.get(name).and_then(Value::as_str)
}

/// Re-bases the concat coordinate `dim` (every 1-d array named as it, along it) and the
/// variable its `bounds` attribute names to the first input's time units, when the inputs'
/// `units` differ and every one is CF time units (`<unit> since <date>`) in the same
/// calendar. Returns whether anything changed; leaves everything else (units that are not
/// times, differing calendars) to the combine's checks, which refuse it.
///
/// # Errors
/// [`Error::Combine`] naming the input and the variable: a coordinate or bounds variable
/// that is not numbers, or too large to load.
pub fn rebase_concat_times(parts: &mut [VirtualDataset], dim: &str) -> Result<bool> {
    let Some(first) = parts.first() else {
        return Ok(false);
    };
    let keys: Vec<String> = first
        .arrays
        .iter()
        .filter(|(k, a)| base_name(k) == dim && a.metadata.dimension_names == [dim])
        .map(|(k, _)| k.clone())
        .collect();
    let mut changed = false;
    for key in keys {
        changed |= rebase_one(parts, &key, dim)?;
    }
    Ok(changed)
}

fn rebase_one(parts: &mut [VirtualDataset], key: &str, dim: &str) -> Result<bool> {
    let arrays: Option<Vec<&ManifestArray>> = parts.iter().map(|p| p.arrays.get(key)).collect();
    let Some(arrays) = arrays else {
        return Ok(false);
    };
    let units: Option<Vec<String>> = arrays
        .iter()
        .map(|a| text(a, "units").map(str::to_string))
        .collect();
    let Some(units) = units else { return Ok(false) };
    if units.iter().all(|u| *u == units[0]) {
        return Ok(false);
    }
    let calendars: Vec<String> = arrays
        .iter()
        .map(|a| {
            text(a, "calendar")
                .unwrap_or("standard")
                .to_ascii_lowercase()
        })
        .collect();
    if calendars.iter().any(|c| *c != calendars[0]) {
        return Ok(false);
    }
    let parsed: std::result::Result<Vec<TimeUnits>, String> =
        units.iter().map(|u| TimeUnits::parse(u)).collect();
    let Ok(parsed) = parsed else { return Ok(false) };
    let target_units = units[0].clone();
    let calendar = calendars[0].clone();
    let mut factors = Vec::with_capacity(parts.len());
    for (i, u) in parsed.iter().enumerate() {
        let f = u
            .rebase_to(&parsed[0], &calendar)
            .map_err(|reason| Error::Combine {
                file: parts[i].name.clone(),
                variable: key.to_string(),
                reason,
            })?;
        factors.push(f);
    }
    let bounds = arrays[0]
        .metadata
        .attributes
        .get("bounds")
        .and_then(Value::as_str)
        .map(|b| match key.rsplit_once('/') {
            Some((group, _)) => format!("{group}/{b}"),
            None => b.to_string(),
        });
    rebase_array(parts, key, &factors, &target_units)?;
    if let Some(bounds) = bounds {
        let along = |p: &VirtualDataset| {
            p.arrays.get(&bounds).is_some_and(|b| {
                b.metadata.dimension_names.first().map(String::as_str) == Some(dim)
            })
        };
        if parts.iter().all(along) {
            // Bounds carry their coordinate's units (CF 7.1) unless they state their own,
            // which must then be the coordinate's.
            for (i, p) in parts.iter().enumerate() {
                if let Some(own) = p.arrays.get(&bounds).and_then(|b| text(b, "units")) {
                    if own != units[i].as_str() {
                        return Err(Error::Combine {
                            file: p.name.clone(),
                            variable: bounds.clone(),
                            reason: format!(
                                "bounds in units '{own}' for a coordinate in '{}': not re-based",
                                units[i]
                            ),
                        });
                    }
                }
            }
            for p in parts.iter_mut() {
                crate::compare::load_values(p, &bounds)?;
            }
            rebase_array(parts, &bounds, &factors, &target_units)?;
        }
    }
    Ok(true)
}

/// Replaces `key` in every input by its values times `factors[i].0` plus `factors[i].1`,
/// all in one type: the first input's when every value fits it exactly, else float64.
fn rebase_array(
    parts: &mut [VirtualDataset],
    key: &str,
    factors: &[(f64, f64)],
    units: &str,
) -> Result<()> {
    let mut rebased = Vec::with_capacity(parts.len());
    for (p, &(scale, offset)) in parts.iter().zip(factors) {
        let Some(a) = p.arrays.get(key) else {
            return Ok(());
        };
        let fill = a.metadata.fill_value.as_f64();
        let values = a
            .loaded_values()
            .and_then(|v| values_as_f64(&a.metadata.dtype, v))
            .ok_or_else(|| Error::Combine {
                file: p.name.clone(),
                variable: key.to_string(),
                reason: "per-file time units are re-based on loaded numbers, and these are not"
                    .into(),
            })?;
        // The fill value stands for no time: it is kept as it is.
        let moved: Vec<f64> = values
            .into_iter()
            .map(|v| {
                if Some(v) == fill {
                    v
                } else {
                    v * scale + offset
                }
            })
            .collect();
        rebased.push(moved);
    }
    let first_dtype = &parts[0].arrays[key].metadata.dtype;
    let little = format!("<{}", first_dtype.get(1..).unwrap_or("f8"));
    let dtype = if rebased.iter().all(|v| f64_as_values(&little, v).is_some()) {
        little
    } else {
        "<f8".to_string()
    };
    for (p, values) in parts.iter_mut().zip(rebased) {
        let Some(a) = p.arrays.get(key) else { continue };
        let mut metadata = a.metadata.clone();
        let bytes = f64_as_values(&dtype, &values).ok_or_else(|| Error::Combine {
            file: p.name.clone(),
            variable: key.to_string(),
            reason: format!("re-based times do not fit {dtype}"),
        })?;
        metadata.dtype.clone_from(&dtype);
        metadata.codecs = vec![crate::codecs::Codec::bytes(Some(
            chunkmill_hdf5::ByteOrder::Little,
        ))];
        if metadata.attributes.contains_key("units") {
            metadata
                .attributes
                .insert("units".into(), Value::from(units.to_string()));
        }
        p.arrays
            .insert(key.to_string(), ManifestArray::loaded(metadata, bytes)?);
    }
    Ok(())
}
