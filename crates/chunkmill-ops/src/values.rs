//! What a window does to the elements it reads: reversing axes and changing values (CF
//! unpacking, masking, a change of data type). Elements are little-endian, in C order.

use chunkmill_plan::ValueMap;
use chunkmill_store::DataType;

/// The numeric type (bool, integers, floats) numpy calls `name` (`int16`, `float32`, …).
///
/// # Errors
/// A message naming the type when it is not numeric.
pub fn numeric(name: &str) -> Result<DataType, String> {
    DataType::from_name(name)
        .ok()
        .filter(DataType::is_numeric)
        .ok_or_else(|| {
            format!(
                "'{name}' is not a numeric data type (bool, int8…int64, uint8…uint64, float16, float32, float64)"
            )
        })
}

/// Bytes of one element of a numeric type.
fn size(t: &DataType) -> usize {
    t.size().unwrap_or(1)
}

/// The type xarray's CF decoding gives data of type `data` with a `scale_factor` and an
/// `add_offset` of these stored types (`_choose_float_dtype` in xarray/coding/variables.py,
/// and `maybe_promote` when there are neither and only a fill value is masked):
/// * both given, of one float type: that type — float32 scale and offset unpack int16 into
///   float32, and even float64 data —, except 32-bit integers, which need float64;
/// * an offset without a scale of the same float type: float64;
/// * a scale alone: its type;
/// * neither: float32 for floats of ≤ 32 bits and integers of ≤ 16 bits, else float64.
///
/// # Errors
/// When a scale alone is of an integer type: xarray would "unpack" into that integer type,
/// which no reader expects, so chunkmill refuses rather than guess.
pub fn decoded_type(
    data: &DataType,
    scale: Option<DataType>,
    offset: Option<DataType>,
) -> Result<DataType, String> {
    match (scale, offset) {
        (Some(s), Some(o)) if s == o && s.is_float() => {
            if matches!(data, DataType::Int(4) | DataType::UInt(4)) {
                Ok(DataType::Float(8))
            } else {
                Ok(s)
            }
        }
        (_, Some(_)) => Ok(DataType::Float(8)),
        (Some(s), None) if s.is_float() => Ok(s),
        (Some(s), None) => Err(format!(
            "its scale_factor is stored as {s}, not as a float: xarray would unpack into that integer type; use --cast instead of --decode-cf for it"
        )),
        (None, None) => Ok(match data {
            DataType::Float(2 | 4) | DataType::Int(1 | 2) | DataType::UInt(1 | 2) => {
                DataType::Float(4)
            }
            _ => DataType::Float(8),
        }),
    }
}

/// `input` (elements of `map.from`) converted to `map.to` as xarray decodes and numpy casts:
/// each element becomes `map.compute` (float64 when absent), masked values NaN (`data ==
/// fill` compared in that type, as xarray's mask does), others `× scale` then `+ offset`, each
/// step rounded to `compute`; then cast to `map.to` (NaN as 0 in an integer output).
///
/// # Errors
/// A message when a data type is not numeric, the bytes are not whole elements, or a value
/// does not fit an integer output.
pub fn convert(map: &ValueMap, input: &[u8]) -> Result<Vec<u8>, String> {
    let from = numeric(&map.from)?;
    let to = numeric(&map.to)?;
    let single = match map.compute.as_deref().map(numeric).transpose()? {
        None | Some(DataType::Float(8)) => false,
        Some(DataType::Float(4)) => true,
        Some(other) => {
            return Err(format!(
                "values cannot be unpacked in {other}: float32 or float64 only"
            ))
        }
    };
    let (from_size, to_size) = (size(&from), size(&to));
    if !input.len().is_multiple_of(from_size) {
        return Err(format!(
            "{} bytes are not whole {} elements",
            input.len(),
            map.from
        ));
    }
    let n = input.len() / from_size;
    let mut out = vec![0u8; n * to_size];
    let masked = |v: f64| map.missing.contains(&v);
    for (element, slot) in input
        .chunks_exact(from_size)
        .zip(out.chunks_exact_mut(to_size))
    {
        let raw = from.read_f64(element).unwrap_or(f64::NAN);
        let value = if single {
            let x = raw as f32;
            if masked(f64::from(x)) {
                f64::NAN
            } else {
                let x = map.scale.map_or(x, |s| x * s as f32);
                f64::from(map.offset.map_or(x, |o| x + o as f32))
            }
        } else if masked(raw) {
            f64::NAN
        } else {
            let x = map.scale.map_or(raw, |s| raw * s);
            map.offset.map_or(x, |o| x + o)
        };
        if value.is_nan() && !to.is_float() {
            to.write_f64(0.0, slot)?;
        } else {
            to.write_f64(value, slot)?;
        }
    }
    Ok(out)
}

/// Reverses `data` (C order, `shape`, `item` bytes per element) along every axis marked in
/// `reversed`; returns it as it is when none is.
#[must_use]
pub fn flip(data: Vec<u8>, shape: &[u64], reversed: &[bool], item: usize) -> Vec<u8> {
    let ndim = shape.len();
    if ndim == 0 || !reversed.iter().any(|&r| r) || data.is_empty() {
        return data;
    }
    let row_len = shape[ndim - 1] as usize;
    let row_bytes = row_len * item;
    let rows = data.len() / row_bytes.max(1);
    let mut out = vec![0u8; data.len()];
    let mut index = vec![0u64; ndim - 1];
    for row in 0..rows {
        // The destination row: each outer index mirrored where its axis is reversed.
        let mut dest = 0u64;
        for (axis, &i) in index.iter().enumerate() {
            let i = if reversed[axis] {
                shape[axis] - 1 - i
            } else {
                i
            };
            dest = dest * shape[axis] + i;
        }
        let src = &data[row * row_bytes..(row + 1) * row_bytes];
        let dst = &mut out[dest as usize * row_bytes..(dest as usize + 1) * row_bytes];
        if reversed[ndim - 1] {
            for (k, element) in src.chunks_exact(item).enumerate() {
                let at = (row_len - 1 - k) * item;
                dst[at..at + item].copy_from_slice(element);
            }
        } else {
            dst.copy_from_slice(src);
        }
        for axis in (0..ndim - 1).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn unpacks_int16_with_scale_offset_and_mask() -> TestResult {
        let input: Vec<u8> = [-32767i16, 0, 100, 32767]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let map = ValueMap {
            from: "int16".into(),
            to: "float32".into(),
            missing: vec![32767.0],
            scale: Some(0.5),
            offset: Some(10.0),
            compute: Some("float32".into()),
        };
        let out = convert(&map, &input)?;
        let values: Vec<f32> = out
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(values[0], -32767.0 * 0.5 + 10.0);
        assert_eq!(values[1], 10.0);
        assert_eq!(values[2], 60.0);
        assert!(values[3].is_nan());
        Ok(())
    }

    #[test]
    fn casts_like_numpy_astype() -> TestResult {
        let input: Vec<u8> = [1.9f64, -1.9, 300.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let map = ValueMap {
            from: "float64".into(),
            to: "int16".into(),
            missing: vec![],
            scale: None,
            offset: None,
            compute: None,
        };
        let out = convert(&map, &input)?;
        let values: Vec<i16> = out
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(values, vec![1, -1, 300]);
        Ok(())
    }

    #[test]
    fn decode_cf_int16_with_float32_scale_gives_float32_as_xarray() {
        use DataType::{Float, Int, UInt};
        let f32_ = || Some(Float(4));
        let f64_ = || Some(Float(8));
        assert_eq!(decoded_type(&Int(2), f32_(), f32_()), Ok(Float(4)));
        assert_eq!(decoded_type(&Int(2), f32_(), None), Ok(Float(4)));
        assert_eq!(decoded_type(&Int(2), f64_(), f64_()), Ok(Float(8)));
        assert_eq!(decoded_type(&Int(4), f32_(), f32_()), Ok(Float(8)));
        assert_eq!(decoded_type(&UInt(4), f32_(), f32_()), Ok(Float(8)));
        assert_eq!(decoded_type(&Int(4), f32_(), None), Ok(Float(4)));
        assert_eq!(decoded_type(&Int(8), f32_(), f32_()), Ok(Float(4)));
        assert_eq!(decoded_type(&Float(8), f32_(), f32_()), Ok(Float(4)));
        assert_eq!(decoded_type(&Int(2), f32_(), f64_()), Ok(Float(8)));
        assert_eq!(decoded_type(&Int(1), None, f32_()), Ok(Float(8)));
        assert_eq!(decoded_type(&Int(2), None, None), Ok(Float(4)));
        assert_eq!(decoded_type(&UInt(1), None, None), Ok(Float(4)));
        assert_eq!(decoded_type(&Int(4), None, None), Ok(Float(8)));
        assert_eq!(decoded_type(&Float(4), None, None), Ok(Float(4)));
        assert!(decoded_type(&Int(2), Some(Int(2)), None).is_err());
    }

    #[test]
    fn decode_cf_float32_is_computed_in_float32_step_by_step() -> TestResult {
        let (scale, offset) = (0.0123f32, 273.15f32);
        let packed: Vec<i16> = (-20_000..20_000).step_by(997).collect();
        let input: Vec<u8> = packed.iter().flat_map(|v| v.to_le_bytes()).collect();
        let map = ValueMap {
            from: "int16".into(),
            to: "float32".into(),
            missing: vec![],
            scale: Some(f64::from(scale)),
            offset: Some(f64::from(offset)),
            compute: Some("float32".into()),
        };
        let out = convert(&map, &input)?;
        let got: Vec<u32> = out
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // numpy: data.astype(float32); data *= scale; data += offset (each in float32).
        let want: Vec<u32> = packed
            .iter()
            .map(|&v| (f32::from(v) * scale + offset).to_bits())
            .collect();
        assert_eq!(got, want);
        // Computed in float64 and rounded once, some differ by an ulp: the bug this guards.
        let once: Vec<u32> = packed
            .iter()
            .map(|&v| ((f64::from(v) * f64::from(scale) + f64::from(offset)) as f32).to_bits())
            .collect();
        assert_ne!(once, want);
        Ok(())
    }

    #[test]
    fn cast_air_int8_of_280_is_refused_not_wrapped_to_24() {
        let input: Vec<u8> = [20.0f64, 280.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let map = ValueMap {
            from: "float64".into(),
            to: "int8".into(),
            missing: vec![],
            scale: None,
            offset: None,
            compute: None,
        };
        let err = convert(&map, &input).err().unwrap_or_default();
        assert!(err.contains("280") && err.contains("int8"), "{err}");
        assert!(DataType::Int(1).holds(-128.9, 127.9));
        assert!(!DataType::Int(1).holds(-129.0, 0.0));
        assert!(!DataType::UInt(2).holds(-1.0, 0.0));
        assert!(DataType::Float(4).holds(f64::NEG_INFINITY, f64::INFINITY));
    }

    #[test]
    fn flips_each_axis_of_a_2x3_array() {
        let data: Vec<u8> = (0..6).collect();
        assert_eq!(
            flip(data.clone(), &[2, 3], &[false, true], 1),
            vec![2, 1, 0, 5, 4, 3]
        );
        assert_eq!(
            flip(data.clone(), &[2, 3], &[true, false], 1),
            vec![3, 4, 5, 0, 1, 2]
        );
        assert_eq!(
            flip(data.clone(), &[2, 3], &[true, true], 1),
            vec![5, 4, 3, 2, 1, 0]
        );
        let wide: Vec<u8> = (0..4).flat_map(|v: u16| v.to_le_bytes()).collect();
        let flipped = flip(wide, &[4], &[true], 2);
        assert_eq!(
            flipped,
            [3u16, 2, 1, 0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>()
        );
    }
}
