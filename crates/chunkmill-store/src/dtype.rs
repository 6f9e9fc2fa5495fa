//! [`DataType`]: the one description of what an element is. It parses a numpy `dtype.str`
//! (Zarr v2: `<f8`, `|b1`, `<M8[ns]`, `|S10`, `<U4`, `|O`, a structured `descr` list) or a
//! Zarr v3 `data_type` (`float64`, `numpy.datetime64` with its configuration, `string`,
//! `fixed_length_utf32`, `r8`, …) and gives back its size, both spellings, numpy's name, and
//! the bytes of a fill value written as JSON (and the JSON of fill bytes).
//!
//! Everything else in chunkmill (planner, codecs, memory) treats elements as opaque bytes of
//! [`DataType::size`]; a new data type is one more variant here.
//!
//! Byte order is not part of the type: chunks are decoded to little-endian (native) bytes,
//! and the v2 spellings written are little-endian.

use base64::Engine as _;
use serde_json::{json, Value};

/// A data type we cannot name or use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported data type {0}")]
pub struct UnsupportedDataType(pub String);

/// What one element of an array is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `bool`, one byte.
    Bool,
    /// `int8` … `int64`, by size in bytes.
    Int(usize),
    /// `uint8` … `uint64`, by size in bytes.
    UInt(usize),
    /// `float16`, `float32`, `float64`, by size in bytes.
    Float(usize),
    /// `complex64` (two float32), `complex128` (two float64), by size in bytes.
    Complex(usize),
    /// numpy `datetime64[unit]`, an int64 count of `scale × unit` since the epoch; NaT is
    /// the smallest int64.
    DateTime(TimeUnit),
    /// numpy `timedelta64[unit]`, an int64 count of `scale × unit`.
    TimeDelta(TimeUnit),
    /// Fixed-length bytes padded with NULs (`|S5`, v3 `null_terminated_bytes`).
    Bytes(usize),
    /// Fixed-length UTF-32 text of this many code points (`<U4`, v3 `fixed_length_utf32`).
    Unicode(usize),
    /// Opaque bytes (`|V6`, v3 `raw_bytes` or `r48`).
    Raw(usize),
    /// Variable-length UTF-8 text (v3 `string`; v2 `|O` with the `vlen-utf8` codec).
    String,
    /// Variable-length bytes (v3 `variable_length_bytes`; v2 `|O` with `vlen-bytes`).
    VarBytes,
    /// A structured type: named fields one after the other (v2 `descr` list, v3 `struct`).
    Struct(Vec<(String, DataType)>),
}

/// The unit of a datetime or timedelta: `ns`, `s`, `D`, … times a scale factor.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TimeUnit {
    /// numpy's unit code: `Y`, `M`, `W`, `D`, `h`, `m`, `s`, `ms`, `us`, `ns`, `ps`, `fs`,
    /// `as`, or `generic`.
    pub unit: String,
    /// How many units one step is (`10s` → 10).
    pub scale_factor: u32,
}

const UNITS: [&str; 14] = [
    "Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as", "generic",
];

impl TimeUnit {
    /// Parse numpy's bracket form, `ns` or `10s`.
    fn parse(text: &str) -> Option<TimeUnit> {
        let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (scale, unit) = text.split_at(digits);
        let scale_factor = if scale.is_empty() {
            1
        } else {
            scale.parse().ok().filter(|s| *s > 0)?
        };
        UNITS.contains(&unit).then(|| TimeUnit {
            unit: unit.to_string(),
            scale_factor,
        })
    }

    fn from_configuration(config: Option<&Value>) -> Option<TimeUnit> {
        let config = config?;
        let unit = config.get("unit")?.as_str()?;
        let scale_factor = match config.get("scale_factor") {
            None => 1,
            Some(s) => u32::try_from(s.as_u64()?).ok().filter(|s| *s > 0)?,
        };
        UNITS.contains(&unit).then(|| TimeUnit {
            unit: unit.to_string(),
            scale_factor,
        })
    }

    fn bracket(&self) -> String {
        if self.scale_factor == 1 {
            self.unit.clone()
        } else {
            format!("{}{}", self.scale_factor, self.unit)
        }
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

fn base64_encode(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A float written as Zarr JSON: a number, `"NaN"`, `"Infinity"`, `"-Infinity"`.
fn json_float(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) if s == "NaN" => Some(f64::NAN),
        Value::String(s) if s == "Infinity" => Some(f64::INFINITY),
        Value::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        other => other.as_f64(),
    }
}

/// The Zarr JSON of a float: non-finite values as the strings Zarr uses.
#[must_use]
pub fn float_json(f: f64) -> Value {
    if f.is_nan() {
        json!("NaN")
    } else if f.is_infinite() {
        json!(if f > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(f)
    }
}

/// Bytes of a float of `size` bytes, from a JSON value: a number, a non-finite name, or a
/// `0x…` hex string of the raw bits (Zarr v3).
fn float_bytes(v: &Value, size: usize) -> Option<Vec<u8>> {
    if let Some(hex) = v.as_str().and_then(|s| s.strip_prefix("0x")) {
        let bits = u64::from_str_radix(hex, 16).ok()?;
        return Some(bits.to_le_bytes()[..size].to_vec());
    }
    let f = json_float(v)?;
    Some(match size {
        2 => half::f16::from_f64(f).to_le_bytes().to_vec(),
        4 => (f as f32).to_le_bytes().to_vec(),
        8 => f.to_le_bytes().to_vec(),
        _ => return None,
    })
}

fn float_from(bytes: &[u8]) -> Option<f64> {
    Some(match bytes.len() {
        2 => half::f16::from_le_bytes(bytes.try_into().ok()?).to_f64(),
        4 => f64::from(f32::from_le_bytes(bytes.try_into().ok()?)),
        8 => f64::from_le_bytes(bytes.try_into().ok()?),
        _ => return None,
    })
}

fn length_bytes(config: Option<&Value>) -> Option<usize> {
    usize::try_from(config?.get("length_bytes")?.as_u64()?).ok()
}

impl DataType {
    /// The type a numpy `dtype.str` names (`<f8`, `|b1`, `>i2`, `<M8[ns]`, `|S10`, `<U4`,
    /// `|V6`, `|O`). `|O` is variable-length text; an array whose codec is `vlen-bytes` is
    /// [`DataType::VarBytes`] (see [`DataType::from_v2`]).
    ///
    /// # Errors
    /// [`UnsupportedDataType`] for anything else.
    pub fn from_typestr(typestr: &str) -> Result<DataType, UnsupportedDataType> {
        let bad = || UnsupportedDataType(format!("'{typestr}'"));
        if typestr.starts_with('[') {
            let descr: Value = serde_json::from_str(typestr).map_err(|_| bad())?;
            return Self::from_descr(&descr).ok_or_else(bad);
        }
        let body = typestr.trim_start_matches(['<', '>', '|', '=']);
        let mut chars = body.chars();
        let kind = chars.next().ok_or_else(bad)?;
        let rest = chars.as_str();
        if let Some(unit) = rest.strip_prefix('8') {
            if matches!(kind, 'M' | 'm') {
                let unit = unit
                    .strip_prefix('[')
                    .and_then(|u| u.strip_suffix(']'))
                    .and_then(TimeUnit::parse)
                    .ok_or_else(bad)?;
                return Ok(if kind == 'M' {
                    DataType::DateTime(unit)
                } else {
                    DataType::TimeDelta(unit)
                });
            }
        }
        if kind == 'O' && rest.is_empty() {
            return Ok(DataType::String);
        }
        let size: usize = rest.parse().map_err(|_| bad())?;
        let dtype = match kind {
            'b' if size == 1 => DataType::Bool,
            'i' if [1, 2, 4, 8].contains(&size) => DataType::Int(size),
            'u' if [1, 2, 4, 8].contains(&size) => DataType::UInt(size),
            'f' if [2, 4, 8].contains(&size) => DataType::Float(size),
            'c' if [8, 16].contains(&size) => DataType::Complex(size),
            'S' if size > 0 => DataType::Bytes(size),
            'U' if size > 0 => DataType::Unicode(size),
            'V' if size > 0 => DataType::Raw(size),
            _ => return Err(bad()),
        };
        Ok(dtype)
    }

    /// numpy's packed `descr` list: `[["id", "<i4"], ["value", "<f8"]]`.
    fn from_descr(descr: &Value) -> Option<DataType> {
        let fields = descr
            .as_array()?
            .iter()
            .map(|field| {
                let pair = field.as_array()?;
                match pair.as_slice() {
                    [name, t] => Some((
                        name.as_str()?.to_string(),
                        Self::from_typestr(t.as_str()?).ok()?,
                    )),
                    _ => None,
                }
            })
            .collect::<Option<Vec<_>>>()?;
        (!fields.is_empty()).then_some(DataType::Struct(fields))
    }

    /// The type of a Zarr v2 `.zarray`: its `dtype` (a string or a structured list) and its
    /// codecs (`filters` and `compressor`), which tell `|O` text from `|O` bytes.
    ///
    /// # Errors
    /// [`UnsupportedDataType`] when the dtype is not one we know.
    pub fn from_v2(dtype: &Value, codecs: &[Value]) -> Result<DataType, UnsupportedDataType> {
        let parsed = match dtype {
            Value::String(s) => Self::from_typestr(s)?,
            Value::Array(_) => {
                Self::from_descr(dtype).ok_or_else(|| UnsupportedDataType(dtype.to_string()))?
            }
            other => return Err(UnsupportedDataType(other.to_string())),
        };
        let id = |c: &Value| c.get("id").and_then(Value::as_str).map(str::to_string);
        if parsed == DataType::String
            && codecs
                .iter()
                .any(|c| id(c).as_deref() == Some("vlen-bytes"))
        {
            return Ok(DataType::VarBytes);
        }
        Ok(parsed)
    }

    /// The type of a Zarr v3 `data_type`: a name (`float32`, `r16`, `string`) or an object
    /// with a name and a configuration (`numpy.datetime64`, `fixed_length_utf32`, …).
    ///
    /// # Errors
    /// [`UnsupportedDataType`] for a name we do not know or a malformed configuration.
    pub fn from_v3(data_type: &Value) -> Result<DataType, UnsupportedDataType> {
        let bad = || {
            UnsupportedDataType(format!(
                "'{}'",
                data_type
                    .as_str()
                    .map_or_else(|| data_type.to_string(), str::to_string)
            ))
        };
        let (name, config) = match data_type {
            Value::String(s) => (s.as_str(), None),
            Value::Object(o) => (
                o.get("name").and_then(Value::as_str).ok_or_else(bad)?,
                o.get("configuration"),
            ),
            _ => return Err(bad()),
        };
        let bits = |prefix: &str| {
            name.strip_prefix(prefix)
                .and_then(|b| b.parse::<usize>().ok())
                .filter(|b| b % 8 == 0 && *b > 0)
                .map(|b| b / 8)
        };
        let dtype = match name {
            "bool" => DataType::Bool,
            "string" => DataType::String,
            "bytes" | "variable_length_bytes" => DataType::VarBytes,
            "numpy.datetime64" => {
                DataType::DateTime(TimeUnit::from_configuration(config).ok_or_else(bad)?)
            }
            "numpy.timedelta64" => {
                DataType::TimeDelta(TimeUnit::from_configuration(config).ok_or_else(bad)?)
            }
            "null_terminated_bytes" => {
                DataType::Bytes(length_bytes(config).filter(|n| *n > 0).ok_or_else(bad)?)
            }
            "fixed_length_utf32" => {
                let n = length_bytes(config)
                    .filter(|n| *n > 0 && n % 4 == 0)
                    .ok_or_else(bad)?;
                DataType::Unicode(n / 4)
            }
            "raw_bytes" => DataType::Raw(length_bytes(config).filter(|n| *n > 0).ok_or_else(bad)?),
            "struct" => {
                let fields = config
                    .and_then(|c| c.get("fields"))
                    .and_then(Value::as_array)
                    .ok_or_else(bad)?
                    .iter()
                    .map(|f| {
                        let name = f.get("name")?.as_str()?.to_string();
                        Some((name, Self::from_v3(f.get("data_type")?).ok()?))
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(bad)?;
                DataType::Struct(fields)
            }
            _ => {
                if let Some(n) = bits("uint").filter(|n| [1, 2, 4, 8].contains(n)) {
                    DataType::UInt(n)
                } else if let Some(n) = bits("int").filter(|n| [1, 2, 4, 8].contains(n)) {
                    DataType::Int(n)
                } else if let Some(n) = bits("float").filter(|n| [2, 4, 8].contains(n)) {
                    DataType::Float(n)
                } else if let Some(n) = bits("complex").filter(|n| [8, 16].contains(n)) {
                    DataType::Complex(n)
                } else if let Some(n) = bits("r") {
                    DataType::Raw(n)
                } else {
                    return Err(bad());
                }
            }
        };
        Ok(dtype)
    }

    /// The type numpy calls `name` (`int16`, `float32`, `datetime64[ns]`, `bool`), or any
    /// `dtype.str` or Zarr v3 name.
    ///
    /// # Errors
    /// [`UnsupportedDataType`] when neither.
    pub fn from_name(name: &str) -> Result<DataType, UnsupportedDataType> {
        for (prefix, datetime) in [("datetime64[", true), ("timedelta64[", false)] {
            if let Some(unit) = name.strip_prefix(prefix).and_then(|u| u.strip_suffix(']')) {
                let unit = TimeUnit::parse(unit)
                    .ok_or_else(|| UnsupportedDataType(format!("'{name}'")))?;
                return Ok(if datetime {
                    DataType::DateTime(unit)
                } else {
                    DataType::TimeDelta(unit)
                });
            }
        }
        Self::from_v3(&Value::String(name.to_string())).or_else(|_| Self::from_typestr(name))
    }

    /// Bytes per element; `None` for variable-length types.
    #[must_use]
    pub fn size(&self) -> Option<usize> {
        Some(match self {
            DataType::Bool => 1,
            DataType::Int(n)
            | DataType::UInt(n)
            | DataType::Float(n)
            | DataType::Complex(n)
            | DataType::Bytes(n)
            | DataType::Raw(n) => *n,
            DataType::DateTime(_) | DataType::TimeDelta(_) => 8,
            DataType::Unicode(n) => 4 * n,
            DataType::String | DataType::VarBytes => return None,
            DataType::Struct(fields) => {
                return fields.iter().map(|(_, t)| t.size()).sum();
            }
        })
    }

    /// The byte-order units of one element, in order: each is reversed to change the
    /// element's byte order (1 for a byte that stays: bools, byte strings, raw bytes). A
    /// UTF-32 character is a unit of 4, a complex number two of its half size, a struct its
    /// fields' units. `None` for a variable-length type.
    #[must_use]
    pub fn byte_order_units(&self) -> Option<Vec<usize>> {
        Some(match self {
            DataType::Bool | DataType::Bytes(_) | DataType::Raw(_) => vec![1; self.size()?],
            DataType::Int(n) | DataType::UInt(n) | DataType::Float(n) => vec![*n],
            DataType::Complex(n) => vec![n / 2, n / 2],
            DataType::DateTime(_) | DataType::TimeDelta(_) => vec![8],
            DataType::Unicode(n) => vec![4; *n],
            DataType::String | DataType::VarBytes => return None,
            DataType::Struct(fields) => {
                let mut units = Vec::new();
                for (_, t) in fields {
                    units.extend(t.byte_order_units()?);
                }
                units
            }
        })
    }

    /// Reverses the byte order of every element of `bytes` (whole elements of this type):
    /// big-endian ↔ little-endian.
    pub fn swap_byte_order(&self, bytes: &mut [u8]) {
        let Some(units) = self.byte_order_units() else {
            return;
        };
        if units.iter().all(|&u| u <= 1) {
            return;
        }
        let size: usize = units.iter().sum();
        for element in bytes.chunks_exact_mut(size.max(1)) {
            let mut at = 0;
            for &u in &units {
                element[at..at + u].reverse();
                at += u;
            }
        }
    }

    /// Whether elements have no fixed size (decoded as bytes and offsets).
    #[must_use]
    pub fn is_variable(&self) -> bool {
        self.size().is_none()
    }

    /// numpy's `dtype.str`, little-endian: `<f8`, `|b1`, `<M8[ns]`, `|S10`, `<U4`, `|O`; a
    /// structured type as the JSON text of its `descr`.
    #[must_use]
    pub fn typestr(&self) -> String {
        match self {
            DataType::Bool => "|b1".into(),
            DataType::Int(1) => "|i1".into(),
            DataType::UInt(1) => "|u1".into(),
            DataType::Int(n) => format!("<i{n}"),
            DataType::UInt(n) => format!("<u{n}"),
            DataType::Float(n) => format!("<f{n}"),
            DataType::Complex(n) => format!("<c{n}"),
            DataType::DateTime(u) => format!("<M8[{}]", u.bracket()),
            DataType::TimeDelta(u) => format!("<m8[{}]", u.bracket()),
            DataType::Bytes(n) => format!("|S{n}"),
            DataType::Unicode(n) => format!("<U{n}"),
            DataType::Raw(n) => format!("|V{n}"),
            DataType::String | DataType::VarBytes => "|O".into(),
            DataType::Struct(_) => self.v2_dtype().to_string(),
        }
    }

    /// The `dtype` of a Zarr v2 `.zarray`: [`DataType::typestr`], or the `descr` list of a
    /// structured type.
    #[must_use]
    pub fn v2_dtype(&self) -> Value {
        match self {
            DataType::Struct(fields) => Value::Array(
                fields
                    .iter()
                    .map(|(name, t)| json!([name, t.typestr()]))
                    .collect(),
            ),
            other => Value::String(other.typestr()),
        }
    }

    /// The Zarr v3 `data_type`, as zarr-python 3 writes it.
    #[must_use]
    pub fn to_v3(&self) -> Value {
        let time = |name: &str, u: &TimeUnit| json!({"name": name, "configuration": {"unit": u.unit, "scale_factor": u.scale_factor}});
        let sized =
            |name: &str, n: usize| json!({"name": name, "configuration": {"length_bytes": n}});
        match self {
            DataType::DateTime(u) => time("numpy.datetime64", u),
            DataType::TimeDelta(u) => time("numpy.timedelta64", u),
            DataType::Bytes(n) => sized("null_terminated_bytes", *n),
            DataType::Unicode(n) => sized("fixed_length_utf32", 4 * n),
            DataType::Raw(n) => sized("raw_bytes", *n),
            DataType::Struct(fields) => {
                let fields: Vec<Value> = fields
                    .iter()
                    .map(|(name, t)| json!({"name": name, "data_type": t.to_v3()}))
                    .collect();
                json!({"name": "struct", "configuration": {"fields": fields}})
            }
            other => Value::String(other.to_string()),
        }
    }

    /// Whether it is a number or a bool (what [`DataType::read_f64`] reads).
    #[must_use]
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            DataType::Bool | DataType::Int(_) | DataType::UInt(_) | DataType::Float(_)
        )
    }

    /// Whether it holds NaN (floats and complex numbers).
    #[must_use]
    pub fn is_float(&self) -> bool {
        matches!(self, DataType::Float(_) | DataType::Complex(_))
    }

    /// The little-endian bytes of one element whose value is `value` as Zarr metadata writes
    /// it (the fill value). `null` is all zeros. For a variable-length type, the element's
    /// bytes (UTF-8 text, or the decoded base64).
    #[must_use]
    pub fn fill_bytes(&self, value: &Value) -> Option<Vec<u8>> {
        if value.is_null() {
            return Some(vec![0; self.size().unwrap_or(0)]);
        }
        let padded = |mut b: Vec<u8>, n: usize| {
            (b.len() <= n).then(|| {
                b.resize(n, 0);
                b
            })
        };
        Some(match self {
            DataType::Bool => vec![u8::from(json_float(value)? != 0.0)],
            DataType::Int(n) => {
                let v = value
                    .as_i64()
                    .or_else(|| json_float(value).map(|f| f as i64))?;
                v.to_le_bytes()[..*n].to_vec()
            }
            DataType::UInt(n) => {
                let v = value
                    .as_u64()
                    .or_else(|| json_float(value).map(|f| f as u64))?;
                v.to_le_bytes()[..*n].to_vec()
            }
            DataType::Float(n) => float_bytes(value, *n)?,
            DataType::Complex(n) => match value.as_array()?.as_slice() {
                [re, im] => [float_bytes(re, n / 2)?, float_bytes(im, n / 2)?].concat(),
                _ => return None,
            },
            DataType::DateTime(_) | DataType::TimeDelta(_) => {
                let v = match value {
                    Value::String(s) if s == "NaT" => i64::MIN,
                    other => other.as_i64()?,
                };
                v.to_le_bytes().to_vec()
            }
            DataType::Bytes(n) => padded(base64_decode(value.as_str()?)?, *n)?,
            DataType::Raw(n) => {
                let b = match value {
                    Value::Array(a) => a
                        .iter()
                        .map(|x| x.as_u64().and_then(|x| u8::try_from(x).ok()))
                        .collect::<Option<Vec<u8>>>()?,
                    other => base64_decode(other.as_str()?)?,
                };
                (b.len() == *n).then_some(b)?
            }
            DataType::Unicode(n) => {
                let b: Vec<u8> = value
                    .as_str()?
                    .chars()
                    .flat_map(|c| u32::from(c).to_le_bytes())
                    .collect();
                padded(b, 4 * n)?
            }
            DataType::String => value.as_str()?.as_bytes().to_vec(),
            DataType::VarBytes => base64_decode(value.as_str()?)?,
            // zarr-python writes a v3 struct's fill as an object of field values.
            DataType::Struct(fields) if value.is_object() => {
                let mut b = Vec::new();
                for (name, t) in fields {
                    b.extend(t.fill_bytes(value.get(name)?)?);
                }
                b
            }
            DataType::Struct(_) => {
                let b = base64_decode(value.as_str()?)?;
                (Some(b.len()) == self.size()).then_some(b)?
            }
        })
    }

    /// The Zarr JSON of one element's little-endian `bytes`: the inverse of
    /// [`DataType::fill_bytes`], in the form zarr-python writes (non-finite floats as names,
    /// `[re, im]` for complex, base64 for bytes without their trailing NULs).
    #[must_use]
    pub fn fill_json(&self, bytes: &[u8]) -> Option<Value> {
        if let Some(size) = self.size() {
            if bytes.len() != size {
                return None;
            }
        }
        let mut wide = [0u8; 8];
        let int_bytes = bytes.get(..bytes.len().min(8))?;
        wide[..int_bytes.len()].copy_from_slice(int_bytes);
        Some(match self {
            DataType::Bool => json!(bytes[0] != 0),
            DataType::Int(n) => {
                let shift = 64 - 8 * *n as u32;
                json!((i64::from_le_bytes(wide) << shift) >> shift)
            }
            DataType::UInt(_) => json!(u64::from_le_bytes(wide)),
            DataType::Float(_) => float_json(float_from(bytes)?),
            DataType::Complex(n) => {
                let (re, im) = bytes.split_at(n / 2);
                json!([float_json(float_from(re)?), float_json(float_from(im)?)])
            }
            DataType::DateTime(_) | DataType::TimeDelta(_) => json!(i64::from_le_bytes(wide)),
            DataType::Bytes(_) => {
                let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
                json!(base64_encode(&bytes[..end]))
            }
            DataType::Unicode(_) => {
                let text: String = bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .take_while(|c| *c != 0)
                    .map(|c| char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER))
                    .collect();
                json!(text)
            }
            DataType::String => json!(std::str::from_utf8(bytes).ok()?),
            DataType::Raw(_) | DataType::VarBytes | DataType::Struct(_) => {
                json!(base64_encode(bytes))
            }
        })
    }

    /// One element of a numeric type as a float (bool: 0 or 1); `None` for other types or
    /// a wrong length.
    #[must_use]
    pub fn read_f64(&self, bytes: &[u8]) -> Option<f64> {
        if Some(bytes.len()) != self.size() {
            return None;
        }
        let mut wide = [0u8; 8];
        wide[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
        Some(match self {
            DataType::Bool => f64::from(u8::from(bytes[0] != 0)),
            DataType::UInt(_) => u64::from_le_bytes(wide) as f64,
            DataType::Int(n) => {
                let shift = 64 - 8 * *n as u32;
                ((i64::from_le_bytes(wide) << shift) >> shift) as f64
            }
            DataType::Float(_) => float_from(bytes)?,
            _ => return None,
        })
    }

    /// The smallest and largest value a numeric type holds, as floats (the whole line for
    /// floats); `None` for other types.
    #[must_use]
    pub fn range(&self) -> Option<(f64, f64)> {
        Some(match self {
            DataType::Bool => (0.0, 1.0),
            DataType::Int(n) => {
                let half = 2f64.powi(8 * *n as i32 - 1);
                (-half, half - 1.0)
            }
            DataType::UInt(n) => (0.0, 2f64.powi(8 * *n as i32) - 1.0),
            DataType::Float(_) => (f64::NEG_INFINITY, f64::INFINITY),
            _ => return None,
        })
    }

    /// Whether every value of `lo..=hi` is stored as itself (integers: truncated towards
    /// zero, as numpy's `astype` does) rather than wrapped around. Floats and booleans take
    /// any value (a float64 past float32's range becomes infinite, as in numpy).
    #[must_use]
    pub fn holds(&self, lo: f64, hi: f64) -> bool {
        match (self, self.range()) {
            (DataType::Int(_) | DataType::UInt(_), Some((min, max))) => {
                lo.trunc() >= min && hi.trunc() <= max
            }
            (DataType::Bool | DataType::Float(_), _) => true,
            _ => false,
        }
    }

    /// Write `value` into `out` (little-endian) as numpy's `astype` would (truncation towards
    /// zero for integers), but refuse a value an integer type cannot hold instead of wrapping
    /// it around (`astype(int8)` of 280 is 24).
    ///
    /// # Errors
    /// A message naming the value and the type.
    pub fn write_f64(&self, value: f64, out: &mut [u8]) -> Result<(), String> {
        if Some(out.len()) != self.size() || !self.is_numeric() {
            return Err(format!("cannot write a number as {self}"));
        }
        match self {
            DataType::Bool => out[0] = u8::from(value != 0.0),
            DataType::Float(2) => out.copy_from_slice(&half::f16::from_f64(value).to_le_bytes()),
            DataType::Float(4) => out.copy_from_slice(&(value as f32).to_le_bytes()),
            DataType::Float(_) => out.copy_from_slice(&value.to_le_bytes()),
            DataType::Int(n) | DataType::UInt(n) => {
                if !self.holds(value, value) {
                    return Err(format!(
                        "the value {value} does not fit {self} (chunkmill does not wrap it around as numpy's astype would)"
                    ));
                }
                let wide = if value < 0.0 {
                    (value as i64).to_le_bytes()
                } else {
                    (value as u64).to_le_bytes()
                };
                out.copy_from_slice(&wide[..*n]);
            }
            _ => unreachable!("is_numeric checked above"),
        }
        Ok(())
    }
}

impl std::fmt::Display for DataType {
    /// numpy's name of the type (`float32`, `bool`, `datetime64[ns]`, `<U4`, `|S5`), and
    /// zarr-python's v3 name for variable-length ones (`string`, `variable_length_bytes`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataType::Bool => write!(f, "bool"),
            DataType::Int(n) => write!(f, "int{}", 8 * n),
            DataType::UInt(n) => write!(f, "uint{}", 8 * n),
            DataType::Float(n) => write!(f, "float{}", 8 * n),
            DataType::Complex(n) => write!(f, "complex{}", 8 * n),
            DataType::DateTime(u) => write!(f, "datetime64[{}]", u.bracket()),
            DataType::TimeDelta(u) => write!(f, "timedelta64[{}]", u.bracket()),
            DataType::String => write!(f, "string"),
            DataType::VarBytes => write!(f, "variable_length_bytes"),
            other => write!(f, "{}", other.typestr()),
        }
    }
}

impl std::str::FromStr for DataType {
    type Err = UnsupportedDataType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataType::from_name(s)
    }
}

impl serde::Serialize for DataType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for DataType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        DataType::from_name(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typestr_and_v3_names_round_trip() {
        for t in [
            "|b1", "|i1", "<i8", "|u1", "<u2", "<f2", "<f4", "<f8", "<c8", "<c16", "<M8[ns]",
            "<m8[10s]", "|S5", "<U4", "|V3", "|O",
        ] {
            let d = DataType::from_typestr(t).unwrap();
            assert_eq!(d.typestr(), t);
            assert_eq!(DataType::from_v3(&d.to_v3()).unwrap(), d, "{t}");
            assert_eq!(DataType::from_name(&d.to_string()).unwrap(), d, "{t}");
        }
        assert_eq!(DataType::from_typestr(">f8").unwrap(), DataType::Float(8));
        assert_eq!(DataType::from_v3(&json!("r16")).unwrap(), DataType::Raw(2));
        assert!(DataType::from_typestr("<f16").is_err());
        assert!(DataType::from_typestr("<M8[lightyear]").is_err());
        assert!(DataType::from_v3(&json!("float128")).is_err());
    }

    #[test]
    fn fill_values_round_trip_through_bytes() {
        let cases = [
            (DataType::Float(4), json!("NaN")),
            (DataType::Float(2), json!(1.5)),
            (DataType::Float(8), json!("-Infinity")),
            (DataType::Complex(16), json!(["NaN", "Infinity"])),
            (DataType::Int(1), json!(-5)),
            (DataType::UInt(8), json!(u64::MAX)),
            (DataType::Bool, json!(true)),
            (DataType::Bytes(5), json!("YWI=")),
            (DataType::Unicode(4), json!("xy")),
            (
                DataType::from_name("datetime64[ns]").unwrap(),
                json!(i64::MIN),
            ),
        ];
        for (d, fill) in cases {
            let bytes = d.fill_bytes(&fill).unwrap();
            assert_eq!(Some(bytes.len()), d.size());
            assert_eq!(d.fill_json(&bytes).unwrap(), fill, "{d}");
        }
        assert_eq!(
            DataType::Float(4).fill_bytes(&json!("0x7fc00000")).unwrap(),
            f32::NAN.to_le_bytes()
        );
    }

    #[test]
    fn numbers_are_written_without_wrapping() {
        let mut out = [0u8; 1];
        assert!(DataType::Int(1).write_f64(280.0, &mut out).is_err());
        DataType::Int(1).write_f64(-3.7, &mut out).unwrap();
        assert_eq!(DataType::Int(1).read_f64(&out), Some(-3.0));
        let mut half = [0u8; 2];
        DataType::Float(2).write_f64(f64::NAN, &mut half).unwrap();
        assert!(DataType::Float(2).read_f64(&half).unwrap().is_nan());
    }
}
