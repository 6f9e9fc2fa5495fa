//! HDF5 and NetCDF-3 types described as numpy types ([`DType`]).

use hdf5_reader::messages::datatype::Datatype;
use hdf5_reader::{ByteOrder as H5Order, StringSize, VarLenKind};
use netcdf_reader::NcType;

use crate::model::{ByteOrder, DType, Field};

fn order(o: H5Order, size: usize) -> (ByteOrder, char) {
    if size <= 1 {
        return (ByteOrder::NotApplicable, '|');
    }
    match o {
        H5Order::LittleEndian => (ByteOrder::Little, '<'),
        H5Order::BigEndian => (ByteOrder::Big, '>'),
    }
}

fn numeric(kind: char, size: usize, o: H5Order, class: &'static str) -> DType {
    let (byte_order, c) = order(o, size);
    let name = match kind {
        'i' => format!("int{}", size * 8),
        'u' => format!("uint{}", size * 8),
        _ => format!("float{}", size * 8),
    };
    DType {
        numpy: format!("{c}{kind}{size}"),
        name,
        byte_order,
        size,
        class,
    }
}

fn void(size: usize, class: &'static str) -> DType {
    DType {
        numpy: format!("|V{size}"),
        name: format!("V{size}"),
        byte_order: ByteOrder::NotApplicable,
        size,
        class,
    }
}

fn object(size: usize, class: &'static str) -> DType {
    DType {
        numpy: "|O".into(),
        name: "object".into(),
        byte_order: ByteOrder::NotApplicable,
        size,
        class,
    }
}

/// Whether an enum is the one h5py writes for numpy `bool`: 1-byte base, `FALSE = 0`,
/// `TRUE = 1`.
pub(crate) fn is_bool_enum(dt: &Datatype) -> bool {
    let Datatype::Enum { base, members } = dt else {
        return false;
    };
    matches!(**base, Datatype::FixedPoint { size: 1, .. })
        && members.len() == 2
        && members
            .iter()
            .any(|m| m.name == "FALSE" && m.value.first() == Some(&0))
        && members
            .iter()
            .any(|m| m.name == "TRUE" && m.value.first() == Some(&1))
}

/// Size in bytes of one stored element of `dt`; variable-length types store a reference of
/// `vlen_ref_size` bytes.
pub(crate) fn stored_size(dt: &Datatype, vlen_ref_size: usize) -> usize {
    match dt {
        Datatype::FixedPoint { size, .. }
        | Datatype::FloatingPoint { size, .. }
        | Datatype::Bitfield { size, .. }
        | Datatype::Reference { size, .. } => usize::from(*size),
        Datatype::String {
            size: StringSize::Fixed(n),
            ..
        } => *n as usize,
        Datatype::String {
            size: StringSize::Variable,
            ..
        }
        | Datatype::VarLen { .. } => vlen_ref_size,
        Datatype::Compound { size, .. } | Datatype::Opaque { size, .. } => *size as usize,
        Datatype::Enum { base, .. } => stored_size(base, vlen_ref_size),
        Datatype::Array { base, dims } => dims
            .iter()
            .fold(stored_size(base, vlen_ref_size), |acc, &d| {
                acc.saturating_mul(usize::try_from(d).unwrap_or(usize::MAX))
            }),
    }
}

/// The numpy description of an HDF5 datatype, as h5py maps it.
pub(crate) fn from_hdf5(dt: &Datatype, vlen_ref_size: usize) -> DType {
    match dt {
        Datatype::FixedPoint {
            size,
            signed,
            byte_order,
        } => numeric(
            if *signed { 'i' } else { 'u' },
            usize::from(*size),
            *byte_order,
            "integer",
        ),
        Datatype::FloatingPoint { size, byte_order } => {
            numeric('f', usize::from(*size), *byte_order, "float")
        }
        Datatype::Bitfield { size, byte_order } => {
            numeric('u', usize::from(*size), *byte_order, "bitfield")
        }
        Datatype::String {
            size: StringSize::Fixed(n),
            ..
        } => DType {
            numpy: format!("|S{n}"),
            name: format!("S{n}"),
            byte_order: ByteOrder::NotApplicable,
            size: *n as usize,
            class: "string",
        },
        Datatype::String {
            size: StringSize::Variable,
            ..
        } => object(vlen_ref_size, "vlen_string"),
        Datatype::VarLen { kind, .. } => object(
            vlen_ref_size,
            if *kind == VarLenKind::String {
                "vlen_string"
            } else {
                "vlen"
            },
        ),
        Datatype::Enum { base, .. } => {
            if is_bool_enum(dt) {
                DType {
                    numpy: "|b1".into(),
                    name: "bool".into(),
                    byte_order: ByteOrder::NotApplicable,
                    size: 1,
                    class: "bool",
                }
            } else {
                DType {
                    class: "enum",
                    ..from_hdf5(base, vlen_ref_size)
                }
            }
        }
        Datatype::Compound { size, .. } => void(*size as usize, "compound"),
        Datatype::Opaque { size, .. } => void(*size as usize, "opaque"),
        Datatype::Array { .. } => void(stored_size(dt, vlen_ref_size), "array"),
        Datatype::Reference { size, .. } => object(usize::from(*size), "reference"),
    }
}

/// numpy's name of a numeric type (`float32`, `int16`, `bool`), `None` for any other.
pub(crate) fn numeric_name(dtype: &DType) -> Option<String> {
    matches!(
        dtype.class,
        "integer" | "float" | "bitfield" | "bool" | "enum"
    )
    .then(|| dtype.name.clone())
    .filter(|n| !n.starts_with(['S', 'V', 'O']) && n != "object")
}

/// The members of a compound type (empty for any other type).
pub(crate) fn fields(dt: &Datatype, vlen_ref_size: usize) -> Vec<Field> {
    match dt {
        Datatype::Compound { fields, .. } => fields
            .iter()
            .map(|f| Field {
                name: f.name.clone(),
                offset: f.byte_offset as usize,
                dtype: from_hdf5(&f.datatype, vlen_ref_size),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The numpy description of a NetCDF-3 type (always big-endian on disk).
pub(crate) fn from_netcdf3(t: &NcType) -> Option<DType> {
    let be = H5Order::BigEndian;
    Some(match t {
        NcType::Byte => numeric('i', 1, be, "integer"),
        NcType::UByte => numeric('u', 1, be, "integer"),
        NcType::Short => numeric('i', 2, be, "integer"),
        NcType::UShort => numeric('u', 2, be, "integer"),
        NcType::Int => numeric('i', 4, be, "integer"),
        NcType::UInt => numeric('u', 4, be, "integer"),
        NcType::Int64 => numeric('i', 8, be, "integer"),
        NcType::UInt64 => numeric('u', 8, be, "integer"),
        NcType::Float => numeric('f', 4, be, "float"),
        NcType::Double => numeric('f', 8, be, "float"),
        NcType::Char => DType {
            numpy: "|S1".into(),
            name: "S1".into(),
            byte_order: ByteOrder::NotApplicable,
            size: 1,
            class: "char",
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_strings_match_h5py() {
        let f4be = Datatype::FloatingPoint {
            size: 4,
            byte_order: H5Order::BigEndian,
        };
        assert_eq!(from_hdf5(&f4be, 16).numpy, ">f4");
        let u1 = Datatype::FixedPoint {
            size: 1,
            signed: false,
            byte_order: H5Order::LittleEndian,
        };
        assert_eq!(from_hdf5(&u1, 16).numpy, "|u1");
        let i8le = Datatype::FixedPoint {
            size: 8,
            signed: true,
            byte_order: H5Order::LittleEndian,
        };
        let d = from_hdf5(&i8le, 16);
        assert_eq!((d.numpy.as_str(), d.name.as_str()), ("<i8", "int64"));
        assert_eq!(
            from_netcdf3(&NcType::Short).map(|d| d.numpy),
            Some(">i2".into())
        );
        assert_eq!(
            from_netcdf3(&NcType::Char).map(|d| d.numpy),
            Some("|S1".into())
        );
    }
}
