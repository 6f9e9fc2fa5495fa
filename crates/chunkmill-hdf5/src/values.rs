//! Decoding stored values (attributes, fill values) into JSON.

use hdf5_reader::messages::datatype::Datatype;
use hdf5_reader::{ByteOrder as H5Order, StringPadding, StringSize, VarLenKind};
use netcdf_reader::NcAttrValue;
use serde_json::{Map, Number, Value};

use crate::dtype::{is_bool_enum, stored_size};

/// What decoding needs from the file: variable-length payloads from the global heap, and the
/// path of an object from its address.
pub(crate) trait ValueContext {
    /// Size of a stored variable-length reference (4 + offset size + 4).
    fn vlen_ref_size(&self) -> usize;
    /// The payload of a variable-length reference: `count × base_size` bytes.
    fn resolve_vlen(&self, reference: &[u8], base_size: usize) -> Option<Vec<u8>>;
    /// The path of the object whose header is at `address`.
    fn object_path(&self, address: u64) -> Option<String>;
    /// Size of an address in this file.
    fn offset_size(&self) -> u8;
}

/// A float as JSON: a number, or `"NaN"`, `"Infinity"`, `"-Infinity"` as Zarr writes them.
pub(crate) fn float_value(x: f64) -> Value {
    if x.is_nan() {
        Value::String("NaN".into())
    } else if x.is_infinite() {
        Value::String(if x > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

/// An `f32` as JSON: its exact value widened to f64 (0.1f32 is `0.10000000149011612`), the
/// number numpy's `float(np.float32(0.1))` gives and so the one xarray and zarr-python write
/// for a float32 attribute. The shortest decimal (`0.1`) would read back as a different
/// float64, so a reader comparing or computing in float64 would see another value.
pub(crate) fn f32_value(x: f32) -> Value {
    float_value(f64::from(x))
}

fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exp = u32::from((bits >> 10) & 0x1f);
    let frac = u32::from(bits & 0x3ff);
    let out = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(out)
}

fn uint(bytes: &[u8], o: H5Order) -> u64 {
    let mut v = 0u64;
    match o {
        H5Order::LittleEndian => {
            for &b in bytes.iter().rev() {
                v = (v << 8) | u64::from(b);
            }
        }
        H5Order::BigEndian => {
            for &b in bytes {
                v = (v << 8) | u64::from(b);
            }
        }
    }
    v
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn string_value(bytes: &[u8], padding: StringPadding) -> Value {
    let end = match padding {
        StringPadding::NullTerminate | StringPadding::NullPad => {
            bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())
        }
        StringPadding::SpacePad => bytes.iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1),
    };
    Value::String(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

/// Decodes one stored element of `dt` (its bytes exactly).
pub(crate) fn decode_element(dt: &Datatype, bytes: &[u8], cx: &dyn ValueContext) -> Value {
    match dt {
        Datatype::FixedPoint {
            size,
            signed,
            byte_order,
        } if matches!(size, 1 | 2 | 4 | 8) && bytes.len() == usize::from(*size) => {
            let raw = uint(bytes, *byte_order);
            if *signed {
                let shift = 64 - 8 * u32::from(*size);
                Value::from(((raw << shift) as i64) >> shift)
            } else {
                Value::from(raw)
            }
        }
        Datatype::Bitfield { size, byte_order }
            if bytes.len() == usize::from(*size) && *size <= 8 =>
        {
            Value::from(uint(bytes, *byte_order))
        }
        Datatype::FloatingPoint { size, byte_order } if bytes.len() == usize::from(*size) => {
            let raw = uint(bytes, *byte_order);
            match size {
                2 => f32_value(f16_to_f32(raw as u16)),
                4 => f32_value(f32::from_bits(raw as u32)),
                8 => float_value(f64::from_bits(raw)),
                _ => Value::String(hex(bytes)),
            }
        }
        Datatype::String {
            size: StringSize::Fixed(_),
            padding,
            ..
        } => string_value(bytes, *padding),
        Datatype::String {
            size: StringSize::Variable,
            padding,
            ..
        } => cx
            .resolve_vlen(bytes, 1)
            .map_or(Value::Null, |s| string_value(&s, *padding)),
        Datatype::VarLen {
            base,
            kind,
            padding,
            ..
        } => {
            let base_size = stored_size(base, cx.vlen_ref_size());
            let Some(payload) = cx.resolve_vlen(bytes, base_size) else {
                return Value::Null;
            };
            if *kind == VarLenKind::String {
                string_value(&payload, *padding)
            } else {
                Value::Array(
                    payload
                        .chunks_exact(base_size.max(1))
                        .map(|e| decode_element(base, e, cx))
                        .collect(),
                )
            }
        }
        Datatype::Enum { base, .. } => {
            if is_bool_enum(dt) {
                Value::Bool(bytes.first().is_some_and(|&b| b != 0))
            } else {
                decode_element(base, bytes, cx)
            }
        }
        Datatype::Compound { fields, .. } => {
            let mut map = Map::new();
            for field in fields {
                let start = field.byte_offset as usize;
                let len = stored_size(&field.datatype, cx.vlen_ref_size());
                let value = bytes
                    .get(start..start.saturating_add(len))
                    .map_or(Value::Null, |b| decode_element(&field.datatype, b, cx));
                map.insert(field.name.clone(), value);
            }
            Value::Object(map)
        }
        Datatype::Array { base, .. } => {
            let size = stored_size(base, cx.vlen_ref_size()).max(1);
            Value::Array(
                bytes
                    .chunks_exact(size)
                    .map(|e| decode_element(base, e, cx))
                    .collect(),
            )
        }
        Datatype::Reference {
            ref_type: hdf5_reader::ReferenceType::Object,
            ..
        } => {
            let n = usize::from(cx.offset_size()).min(bytes.len());
            let address = uint(&bytes[..n], H5Order::LittleEndian);
            cx.object_path(address)
                .map_or(Value::from(address), Value::String)
        }
        _ => Value::String(hex(bytes)),
    }
}

/// Decodes `count` stored elements and shapes them: a scalar for one element, an array
/// (nested for several dimensions) otherwise.
pub(crate) fn decode_array(
    dt: &Datatype,
    raw: &[u8],
    shape: &[u64],
    cx: &dyn ValueContext,
) -> Value {
    let size = stored_size(dt, cx.vlen_ref_size());
    let count = shape.iter().product::<u64>();
    let elements: Vec<Value> = if size == 0 {
        Vec::new()
    } else {
        raw.chunks_exact(size)
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .map(|e| decode_element(dt, e, cx))
            .collect()
    };
    shape_values(elements, shape)
}

/// Shapes a flat list of values: one value is a scalar, several an array nested by `shape`.
pub(crate) fn shape_values(mut elements: Vec<Value>, shape: &[u64]) -> Value {
    if elements.len() == 1 {
        return elements.swap_remove(0);
    }
    if shape.len() <= 1 || elements.len() as u64 != shape.iter().product::<u64>() {
        return Value::Array(elements);
    }
    fn nest(values: &mut std::vec::IntoIter<Value>, shape: &[u64]) -> Value {
        match shape {
            [] => values.next().unwrap_or(Value::Null),
            [n] => Value::Array(values.take(*n as usize).collect()),
            [n, rest @ ..] => Value::Array((0..*n).map(|_| nest(values, rest)).collect()),
        }
    }
    nest(&mut elements.into_iter(), shape)
}

/// numpy's name of a NetCDF-3 attribute's numeric type, `None` for text.
pub(crate) fn netcdf3_type_name(value: &NcAttrValue) -> Option<&'static str> {
    Some(match value {
        NcAttrValue::Bytes(_) => "int8",
        NcAttrValue::UBytes(_) => "uint8",
        NcAttrValue::Shorts(_) => "int16",
        NcAttrValue::UShorts(_) => "uint16",
        NcAttrValue::Ints(_) => "int32",
        NcAttrValue::UInts(_) => "uint32",
        NcAttrValue::Int64s(_) => "int64",
        NcAttrValue::UInt64s(_) => "uint64",
        NcAttrValue::Floats(_) => "float32",
        NcAttrValue::Doubles(_) => "float64",
        _ => return None,
    })
}

/// A NetCDF-3 attribute as JSON: text is a string, one number a scalar, more an array.
pub(crate) fn from_netcdf3(value: &NcAttrValue) -> Value {
    fn many<T: Copy>(v: &[T], f: impl Fn(T) -> Value) -> Value {
        shape_values(v.iter().map(|&x| f(x)).collect(), &[v.len() as u64])
    }
    match value {
        NcAttrValue::Bytes(v) => many(v, Value::from),
        NcAttrValue::UBytes(v) => many(v, Value::from),
        NcAttrValue::Shorts(v) => many(v, Value::from),
        NcAttrValue::UShorts(v) => many(v, Value::from),
        NcAttrValue::Ints(v) => many(v, Value::from),
        NcAttrValue::UInts(v) => many(v, Value::from),
        NcAttrValue::Int64s(v) => many(v, Value::from),
        NcAttrValue::UInt64s(v) => many(v, Value::from),
        NcAttrValue::Floats(v) => many(v, f32_value),
        NcAttrValue::Doubles(v) => many(v, float_value),
        NcAttrValue::Chars(s) => Value::String(s.clone()),
        NcAttrValue::Strings(v) => shape_values(
            v.iter().map(|s| Value::String(s.clone())).collect(),
            &[v.len() as u64],
        ),
        NcAttrValue::UserDefined { .. } => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoFile;
    impl ValueContext for NoFile {
        fn vlen_ref_size(&self) -> usize {
            16
        }
        fn resolve_vlen(&self, _: &[u8], _: usize) -> Option<Vec<u8>> {
            None
        }
        fn object_path(&self, _: u64) -> Option<String> {
            None
        }
        fn offset_size(&self) -> u8 {
            8
        }
    }

    #[test]
    fn float32_numbers_are_widened_exactly_as_numpy_does() {
        let f4 = Datatype::FloatingPoint {
            size: 4,
            byte_order: H5Order::BigEndian,
        };
        assert_eq!(
            decode_element(&f4, &0.1f32.to_be_bytes(), &NoFile),
            Value::from(0.100_000_001_490_116_12)
        );
        assert_eq!(
            decode_element(&f4, &f32::NAN.to_be_bytes(), &NoFile),
            Value::from("NaN")
        );
        let i2 = Datatype::FixedPoint {
            size: 2,
            signed: true,
            byte_order: H5Order::LittleEndian,
        };
        assert_eq!(
            decode_element(&i2, &(-3i16).to_le_bytes(), &NoFile),
            Value::from(-3)
        );
        let f2 = Datatype::FloatingPoint {
            size: 2,
            byte_order: H5Order::LittleEndian,
        };
        // 1.5 in half precision is 0x3e00.
        assert_eq!(
            decode_element(&f2, &[0x00, 0x3e], &NoFile),
            Value::from(1.5)
        );
    }

    #[test]
    fn arrays_are_shaped_and_single_values_squeezed() {
        let v = |n: i64| Value::from(n);
        assert_eq!(shape_values(vec![v(1)], &[1]), v(1));
        assert_eq!(
            shape_values(vec![v(1), v(2)], &[2]),
            serde_json::json!([1, 2])
        );
        assert_eq!(
            shape_values((0..6).map(v).collect(), &[2, 3]),
            serde_json::json!([[0, 1, 2], [3, 4, 5]])
        );
        assert_eq!(
            from_netcdf3(&NcAttrValue::Chars("days since 2000".into())),
            Value::from("days since 2000")
        );
        assert_eq!(
            from_netcdf3(&NcAttrValue::Doubles(vec![2.5])),
            Value::from(2.5)
        );
    }
}
