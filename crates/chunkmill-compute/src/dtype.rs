//! The data types compute reads and writes, numpy's promotion between them, and their bytes.
//!
//! Values are computed in `f64` (exact for every integer below 2^53); each operation's result
//! type follows numpy (NEP 50: Python scalars are "weak" and take the array's type), and a
//! value is rounded to its type where numpy would round it: integer results are whole
//! numbers, `float32` results are rounded to `f32` when written.

use serde::{Deserialize, Serialize};

/// A numpy data type, little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Float32,
    Float64,
}

impl DType {
    /// The computation type of a stored [`chunkmill_store::DataType`]: numbers and booleans
    /// (`None` for text, datetimes, complex numbers, float16, which compute does not take).
    #[must_use]
    pub fn of(stored: &chunkmill_store::DataType) -> Option<DType> {
        Self::from_name(&stored.to_string())
    }

    /// The stored type that holds it.
    #[must_use]
    pub fn data_type(self) -> chunkmill_store::DataType {
        use chunkmill_store::DataType as T;
        match self {
            DType::Bool => T::Bool,
            DType::Int8 => T::Int(1),
            DType::Int16 => T::Int(2),
            DType::Int32 => T::Int(4),
            DType::Int64 => T::Int(8),
            DType::Uint8 => T::UInt(1),
            DType::Uint16 => T::UInt(2),
            DType::Uint32 => T::UInt(4),
            DType::Uint64 => T::UInt(8),
            DType::Float32 => T::Float(4),
            DType::Float64 => T::Float(8),
        }
    }

    /// The type of a numpy name (`float32`, `int16`, `bool`, …).
    #[must_use]
    pub fn from_name(name: &str) -> Option<DType> {
        Some(match name {
            "bool" => DType::Bool,
            "int8" => DType::Int8,
            "int16" => DType::Int16,
            "int32" => DType::Int32,
            "int64" => DType::Int64,
            "uint8" => DType::Uint8,
            "uint16" => DType::Uint16,
            "uint32" => DType::Uint32,
            "uint64" => DType::Uint64,
            "float32" => DType::Float32,
            "float64" => DType::Float64,
            _ => return None,
        })
    }

    /// The numpy name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::Int8 => "int8",
            DType::Int16 => "int16",
            DType::Int32 => "int32",
            DType::Int64 => "int64",
            DType::Uint8 => "uint8",
            DType::Uint16 => "uint16",
            DType::Uint32 => "uint32",
            DType::Uint64 => "uint64",
            DType::Float32 => "float32",
            DType::Float64 => "float64",
        }
    }

    /// Bytes per element.
    #[must_use]
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::Int8 | DType::Uint8 => 1,
            DType::Int16 | DType::Uint16 => 2,
            DType::Int32 | DType::Uint32 | DType::Float32 => 4,
            DType::Int64 | DType::Uint64 | DType::Float64 => 8,
        }
    }

    /// Whether it is a floating-point type.
    #[must_use]
    pub fn is_float(self) -> bool {
        matches!(self, DType::Float32 | DType::Float64)
    }

    /// Whether it is an integer type (not bool).
    #[must_use]
    pub fn is_int(self) -> bool {
        !self.is_float() && self != DType::Bool
    }

    fn signed(self) -> bool {
        matches!(
            self,
            DType::Int8 | DType::Int16 | DType::Int32 | DType::Int64
        )
    }

    fn int_of(bits: usize, signed: bool) -> DType {
        match (bits, signed) {
            (1, true) => DType::Int8,
            (2, true) => DType::Int16,
            (4, true) => DType::Int32,
            (8, true) => DType::Int64,
            (1, false) => DType::Uint8,
            (2, false) => DType::Uint16,
            (4, false) => DType::Uint32,
            _ => DType::Uint64,
        }
    }

    /// numpy's result type of two arrays (`np.result_type`).
    #[must_use]
    pub fn promote(a: DType, b: DType) -> DType {
        if a == b {
            return a;
        }
        if a == DType::Bool {
            return b;
        }
        if b == DType::Bool {
            return a;
        }
        match (a.is_float(), b.is_float()) {
            (true, true) => a.max(b),
            (true, false) | (false, true) => {
                let (f, i) = if a.is_float() { (a, b) } else { (b, a) };
                // float32 holds int8/int16/uint8/uint16 exactly; wider integers need float64.
                if f == DType::Float32 && i.size() <= 2 {
                    DType::Float32
                } else {
                    DType::Float64
                }
            }
            (false, false) => {
                if a.signed() == b.signed() {
                    DType::int_of(a.size().max(b.size()), a.signed())
                } else {
                    let (s, u) = if a.signed() { (a, b) } else { (b, a) };
                    if s.size() > u.size() {
                        s
                    } else if u.size() < 8 {
                        DType::int_of(u.size() * 2, true)
                    } else {
                        DType::Float64
                    }
                }
            }
        }
    }

    /// The smallest float type that holds this type's values as numpy's true division and
    /// ufuncs such as `sqrt` choose it (`float32` stays, small integers give `float32`… numpy
    /// gives float64 for every integer input of `np.sqrt` on int32/int64 and float32 on
    /// int8/int16).
    #[must_use]
    pub fn float_of(self) -> DType {
        match self {
            DType::Float32 => DType::Float32,
            DType::Bool | DType::Int8 | DType::Uint8 | DType::Int16 | DType::Uint16 => {
                DType::Float32
            }
            _ => DType::Float64,
        }
    }

    /// `v` rounded to a value of this type, as numpy's `astype` gives it (floats truncated
    /// towards zero for integers; NaN is 0 for bool-less integer casts is undefined in numpy,
    /// here the minimum of the type as numpy gives it on x86).
    #[must_use]
    pub fn round(self, v: f64) -> f64 {
        match self {
            DType::Float64 => v,
            DType::Float32 => f64::from(v as f32),
            DType::Bool => f64::from(u8::from(v != 0.0)),
            DType::Int8 => f64::from(v as i64 as i8),
            DType::Int16 => f64::from(v as i64 as i16),
            DType::Int32 => f64::from(v as i64 as i32),
            DType::Int64 => (v as i64) as f64,
            DType::Uint8 => f64::from(v as i64 as u8),
            DType::Uint16 => f64::from(v as i64 as u16),
            DType::Uint32 => f64::from(v as i64 as u32),
            DType::Uint64 => (v as u64) as f64,
        }
    }

    /// Decode native-order bytes of this type into `out` (as many values as fit).
    pub fn decode(self, bytes: &[u8], out: &mut Vec<f64>) {
        out.clear();
        out.resize(bytes.len() / self.size(), 0.0);
        self.decode_into(bytes, out);
    }

    /// Decode native-order bytes of this type into `out`, one value per slot (as many as
    /// both hold). The type is matched once per call, so each loop is one conversion that
    /// the compiler vectorizes.
    pub fn decode_into(self, bytes: &[u8], out: &mut [f64]) {
        fn each<const N: usize>(bytes: &[u8], out: &mut [f64], f: impl Fn([u8; N]) -> f64) {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(N)) {
                let mut a = [0u8; N];
                a.copy_from_slice(b);
                *o = f(a);
            }
        }
        match self {
            DType::Bool => each(bytes, out, |b: [u8; 1]| f64::from(u8::from(b[0] != 0))),
            DType::Int8 => each(bytes, out, |b| f64::from(i8::from_ne_bytes(b))),
            DType::Uint8 => each(bytes, out, |b| f64::from(u8::from_ne_bytes(b))),
            DType::Int16 => each(bytes, out, |b| f64::from(i16::from_ne_bytes(b))),
            DType::Uint16 => each(bytes, out, |b| f64::from(u16::from_ne_bytes(b))),
            DType::Int32 => each(bytes, out, |b| f64::from(i32::from_ne_bytes(b))),
            DType::Uint32 => each(bytes, out, |b| f64::from(u32::from_ne_bytes(b))),
            DType::Float32 => each(bytes, out, |b| f64::from(f32::from_ne_bytes(b))),
            DType::Int64 => each(bytes, out, |b| i64::from_ne_bytes(b) as f64),
            DType::Uint64 => each(bytes, out, |b| u64::from_ne_bytes(b) as f64),
            DType::Float64 => each(bytes, out, f64::from_ne_bytes),
        }
    }

    /// Encode `values` (already rounded to this type) as native-order bytes.
    #[must_use]
    pub fn encode(self, values: &[f64]) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(values, &mut out);
        out
    }

    /// [`DType::encode`] into `out` (resized to fit; its old contents are overwritten), so a
    /// caller can reuse one buffer.
    pub fn encode_into(self, values: &[f64], out: &mut Vec<u8>) {
        let n = values.len() * self.size();
        if out.len() > n {
            out.truncate(n);
        } else {
            out.resize(n, 0);
        }
        self.encode_slice(values, out);
    }

    /// [`DType::encode`] into `out`, one value per slot (as many as both hold).
    pub fn encode_slice(self, values: &[f64], out: &mut [u8]) {
        fn each<const N: usize>(values: &[f64], out: &mut [u8], f: impl Fn(f64) -> [u8; N]) {
            for (o, &v) in out.chunks_exact_mut(N).zip(values) {
                o.copy_from_slice(&f(v));
            }
        }
        match self {
            DType::Bool => each(values, out, |v| [u8::from(v != 0.0)]),
            DType::Int8 => each(values, out, |v| (v as i8).to_ne_bytes()),
            DType::Uint8 => each(values, out, |v| (v as u8).to_ne_bytes()),
            DType::Int16 => each(values, out, |v| (v as i16).to_ne_bytes()),
            DType::Uint16 => each(values, out, |v| (v as u16).to_ne_bytes()),
            DType::Int32 => each(values, out, |v| (v as i32).to_ne_bytes()),
            DType::Uint32 => each(values, out, |v| (v as u32).to_ne_bytes()),
            DType::Float32 => each(values, out, |v| (v as f32).to_ne_bytes()),
            DType::Int64 => each(values, out, |v| (v as i64).to_ne_bytes()),
            DType::Uint64 => each(values, out, |v| (v as u64).to_ne_bytes()),
            DType::Float64 => each(values, out, f64::to_ne_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DType::*;
    use super::*;

    #[test]
    fn promotion_follows_numpy_result_type() {
        // Each pair checked against np.result_type.
        assert_eq!(DType::promote(Int16, Float32), Float32);
        assert_eq!(DType::promote(Int32, Float32), Float64);
        assert_eq!(DType::promote(Uint8, Int8), Int16);
        assert_eq!(DType::promote(Uint64, Int64), Float64);
        assert_eq!(DType::promote(Bool, Int8), Int8);
        assert_eq!(DType::promote(Int64, Uint32), Int64);
    }

    #[test]
    fn bytes_round_trip() {
        for t in [
            Int8, Int16, Int32, Int64, Uint8, Uint16, Float32, Float64, Bool,
        ] {
            let values: &[f64] = if t == Bool {
                &[0.0, 1.0]
            } else {
                &[0.0, 1.0, 5.0]
            };
            let mut back = Vec::new();
            t.decode(&t.encode(values), &mut back);
            assert_eq!(back, values, "{}", t.name());
        }
        let mut back = Vec::new();
        Bool.decode(&Bool.encode(&[5.0]), &mut back);
        assert_eq!(back, [1.0]);
        for (t, v, want) in [
            (Int8, 300.0, 44.0),
            (Uint8, -1.0, 255.0),
            (Int16, -3.7, -3.0),
        ] {
            // numpy: np.array([v]).astype(t) wraps and truncates the same way.
            assert_eq!(t.round(v), want, "{}", t.name());
        }
    }
}
