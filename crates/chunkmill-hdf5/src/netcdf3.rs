//! NetCDF-3 (CDF-1 classic, CDF-2 64-bit offset, CDF-5) through netcdf-reader's header parser.
//!
//! A NetCDF-3 file is a header followed by the data of each fixed-size variable in one block,
//! then the records: record `r` holds, for every record variable in header order, its slab for
//! that step of the unlimited dimension, each padded to 4 bytes (unless there is only one
//! record variable). So a fixed-size variable is one byte range, and a record variable is one
//! range per record, `record_stride` bytes apart — a chunk of shape `[1, rest of the shape…]`.
//!
//! The header is read from the start of the file in growing prefixes (8 KiB, doubled until it
//! parses), so a remote file costs one or two requests.

use std::sync::Arc;

use netcdf_reader::classic::data::compute_record_stride;
use netcdf_reader::classic::header::{parse_header, ClassicHeader};
use netcdf_reader::{NcAttrValue, NcFormat, NcType, NcVariable};
use serde_json::Value;

use crate::dtype;
use crate::error::{Error, Result};
use crate::format::Format;
use crate::model::{
    Attribute, ByteRange, ChunkRef, DataRefs, Dimension, FillValue, GroupInfo, Inventory, Layout,
    Variable,
};
use crate::source::RangeSource;
use crate::values::{self, f32_value, float_value};

/// First header read; doubled until the header parses.
const FIRST_HEADER_READ: u64 = 8 * 1024;
/// `numrecs` of a file still being written ("streaming").
const STREAMING: [u8; 4] = [0xff; 4];

/// An open NetCDF-3 file.
pub(crate) struct NetCdf3Reader {
    name: String,
    format: Format,
    header: ClassicHeader,
    record_stride: u64,
}

fn nc_format(format: Format) -> NcFormat {
    match format {
        Format::NetCdf3Offset64 => NcFormat::Offset64,
        Format::NetCdf3Cdf5 => NcFormat::Cdf5,
        _ => NcFormat::Classic,
    }
}

impl NetCdf3Reader {
    pub(crate) fn open(source: Arc<dyn RangeSource>, format: Format) -> Result<Self> {
        let name = source.name().to_string();
        let size = source.size();
        let nc = nc_format(format);
        let mut len = FIRST_HEADER_READ.min(size);
        let (mut header, prefix) = loop {
            let prefix = source
                .read_range(0, len as usize)
                .map_err(|e| Error::Read {
                    file: name.clone(),
                    offset: 0,
                    len,
                    source: e,
                })?;
            match parse_header(&prefix, nc) {
                Ok(header) => break (header, prefix),
                Err(netcdf_reader::Error::UnexpectedEof { .. }) if len < size => {
                    len = len.saturating_mul(2).min(size);
                }
                Err(source) => return Err(Error::NetCdf3 { file: name, source }),
            }
        };
        let record_stride =
            compute_record_stride(&header.variables).map_err(|source| Error::NetCdf3 {
                file: name.clone(),
                source,
            })?;
        let record_start = header
            .variables
            .iter()
            .filter(|v| v.is_record_var)
            .map(|v| v.data_offset)
            .min();
        let streaming = format != Format::NetCdf3Cdf5 && prefix.get(4..8) == Some(&STREAMING[..]);
        if let (true, Some(start)) = (streaming, record_start) {
            // A file still being written: count the whole records present.
            let numrecs = size
                .saturating_sub(start)
                .checked_div(record_stride)
                .unwrap_or(0);
            set_numrecs(&mut header, numrecs);
        }

        let truncated = |object: String, offset: u64, end: u64| Error::Truncated {
            file: name.clone(),
            object,
            offset,
            end,
            size,
        };
        for v in &header.variables {
            let (offset, length) = if v.is_record_var {
                if header.numrecs == 0 || v.record_size == 0 {
                    continue;
                }
                let last = (header.numrecs - 1)
                    .checked_mul(record_stride)
                    .and_then(|x| x.checked_add(v.data_offset))
                    .unwrap_or(u64::MAX);
                (last, v.record_size)
            } else {
                (v.data_offset, v._data_size)
            };
            let end = offset.saturating_add(length);
            if end > size {
                return Err(truncated(format!("/{}", v.name), offset, end));
            }
        }
        Ok(Self {
            name,
            format,
            header,
            record_stride,
        })
    }

    pub(crate) fn inventory(&self) -> Inventory {
        let h = &self.header;
        let variables: Vec<Variable> = h.variables.iter().map(|v| self.variable(v)).collect();
        let dimensions = h
            .dimensions
            .iter()
            .map(|d| Dimension {
                name: d.name.clone(),
                group: "/".into(),
                length: d.size,
                unlimited: d.is_unlimited,
                coordinate_variable: h
                    .variables
                    .iter()
                    .find(|v| {
                        v.name == d.name
                            && v.dimensions.len() == 1
                            && v.dimensions[0].name == d.name
                    })
                    .map(|v| format!("/{}", v.name)),
                netcdf4_dimid: None,
            })
            .collect();
        Inventory {
            file: self.name.clone(),
            format: self.format,
            netcdf4: false,
            groups: vec![GroupInfo {
                path: "/".into(),
                attributes: attributes(&h.global_attributes),
                internal_attributes: Vec::new(),
                aliases: Vec::new(),
            }],
            variables,
            dimensions,
            unlisted: Vec::new(),
        }
    }

    fn variable(&self, v: &NcVariable) -> Variable {
        let shape: Vec<u64> = v.dimensions.iter().map(|d| d.size).collect();
        // A classic header holds only the classic types, all of which map.
        let dtype = dtype::from_netcdf3(&v.dtype).unwrap_or_else(unknown_dtype);
        let chunk_shape = v.is_record_var.then(|| {
            std::iter::once(1)
                .chain(shape.iter().skip(1).copied())
                .collect()
        });
        Variable {
            path: format!("/{}", v.name),
            group: "/".into(),
            name: v.name.clone(),
            max_shape: v
                .dimensions
                .iter()
                .map(|d| (!d.is_unlimited).then_some(d.size))
                .collect(),
            shape,
            dtype,
            layout: Layout::NetCdf3 {
                data_offset: v.data_offset,
                record_stride: v.is_record_var.then_some(self.record_stride),
                record_size: if v.is_record_var {
                    v.record_size
                } else {
                    v._data_size
                },
            },
            chunk_shape,
            fill_value: Some(fill_value(v)),
            filters: Vec::new(),
            attributes: attributes(&v.attributes),
            internal_attributes: Vec::new(),
            dimensions: Some(v.dimensions.iter().map(|d| d.name.clone()).collect()),
            is_dimension_scale: v.dimensions.len() == 1 && v.dimensions[0].name == v.name,
            aliases: Vec::new(),
            object_address: None,
            fields: Vec::new(),
        }
    }

    pub(crate) fn data_refs(&self, variable: &Variable) -> Result<DataRefs> {
        let v = self
            .header
            .variables
            .iter()
            .find(|v| format!("/{}", v.name) == variable.path)
            .ok_or_else(|| Error::NoSuchVariable {
                file: self.name.clone(),
                variable: variable.path.clone(),
            })?;
        let shape: Vec<u64> = v.dimensions.iter().map(|d| d.size).collect();
        if !v.is_record_var {
            let range = (v._data_size > 0 && !shape.contains(&0)).then_some(ByteRange {
                offset: v.data_offset,
                length: v._data_size,
            });
            return Ok(DataRefs::Contiguous { range });
        }
        let chunk_shape: Vec<u64> = std::iter::once(1)
            .chain(shape.iter().skip(1).copied())
            .collect();
        let grid_shape: Vec<u64> = std::iter::once(self.header.numrecs)
            .chain(shape.iter().skip(1).map(|&s| u64::from(s > 0)))
            .collect();
        let chunks = if v.record_size == 0 {
            Vec::new()
        } else {
            (0..self.header.numrecs)
                .map(|r| ChunkRef {
                    indices: std::iter::once(r)
                        .chain(std::iter::repeat_n(0, shape.len().saturating_sub(1)))
                        .collect(),
                    offset: v.data_offset + r * self.record_stride,
                    length: v.record_size,
                    filter_mask: 0,
                })
                .collect()
        };
        Ok(DataRefs::Chunked {
            chunk_shape,
            grid_shape,
            chunks,
        })
    }
}

/// Bytes, for a type a classic header cannot hold.
fn unknown_dtype() -> crate::model::DType {
    crate::model::DType {
        numpy: "|V1".into(),
        name: "V1".into(),
        byte_order: crate::model::ByteOrder::NotApplicable,
        size: 1,
        class: "opaque",
    }
}

/// Sets the number of records (the unlimited dimension's length) everywhere it appears.
fn set_numrecs(header: &mut ClassicHeader, numrecs: u64) {
    header.numrecs = numrecs;
    for d in header.dimensions.iter_mut().filter(|d| d.is_unlimited) {
        d.size = numrecs;
    }
    for v in &mut header.variables {
        for d in v.dimensions.iter_mut().filter(|d| d.is_unlimited) {
            d.size = numrecs;
        }
    }
}

fn attributes(attrs: &[netcdf_reader::NcAttribute]) -> Vec<Attribute> {
    attrs
        .iter()
        .map(|a| Attribute {
            name: a.name.clone(),
            value: values::from_netcdf3(&a.value),
            dtype: values::netcdf3_type_name(&a.value).map(str::to_string),
        })
        .collect()
}

/// The variable's `_FillValue` if it has one of its own type, else the NetCDF default fill
/// value of its type (`NC_FILL_*` of netcdf.h).
fn fill_value(v: &NcVariable) -> FillValue {
    let own = v
        .attributes
        .iter()
        .find(|a| a.name == "_FillValue")
        .and_then(|a| attribute_fill(&v.dtype, &a.value));
    own.unwrap_or_else(|| default_fill(&v.dtype))
}

fn fill(bytes: Vec<u8>, value: Value) -> FillValue {
    FillValue { bytes, value }
}

fn attribute_fill(t: &NcType, value: &NcAttrValue) -> Option<FillValue> {
    Some(match (t, value) {
        (NcType::Byte, NcAttrValue::Bytes(v)) => {
            fill(v.first()?.to_be_bytes().to_vec(), Value::from(*v.first()?))
        }
        (NcType::UByte, NcAttrValue::UBytes(v)) => {
            fill(v.first()?.to_be_bytes().to_vec(), Value::from(*v.first()?))
        }
        (NcType::Short, NcAttrValue::Shorts(v)) => {
            fill(v.first()?.to_be_bytes().to_vec(), Value::from(*v.first()?))
        }
        (NcType::UShort, NcAttrValue::UShorts(v)) => {
            fill(v.first()?.to_be_bytes().to_vec(), Value::from(*v.first()?))
        }
        (NcType::Int, NcAttrValue::Ints(v)) => {
            fill(v.first()?.to_be_bytes().to_vec(), Value::from(*v.first()?))
        }
        (NcType::UInt, NcAttrValue::UInts(v)) => {
            fill(v.first()?.to_be_bytes().to_vec(), Value::from(*v.first()?))
        }
        (NcType::Int64, NcAttrValue::Int64s(v)) => {
            fill(v.first()?.to_be_bytes().to_vec(), Value::from(*v.first()?))
        }
        (NcType::UInt64, NcAttrValue::UInt64s(v)) => {
            fill(v.first()?.to_be_bytes().to_vec(), Value::from(*v.first()?))
        }
        (NcType::Float, NcAttrValue::Floats(v)) => {
            fill(v.first()?.to_be_bytes().to_vec(), f32_value(*v.first()?))
        }
        (NcType::Double, NcAttrValue::Doubles(v)) => {
            fill(v.first()?.to_be_bytes().to_vec(), float_value(*v.first()?))
        }
        (NcType::Char, NcAttrValue::Chars(s)) => {
            let b = s.as_bytes().first().copied().unwrap_or(0);
            fill(vec![b], Value::String(char::from(b).to_string()))
        }
        _ => return None,
    })
}

/// `NC_FILL_BYTE` … `NC_FILL_UINT64` of netcdf.h.
fn default_fill(t: &NcType) -> FillValue {
    // 9.9692099683868690e+36, exactly as stored.
    const NC_FILL_FLOAT: f32 = f32::from_bits(0x7cf0_0000);
    const NC_FILL_DOUBLE: f64 = f64::from_bits(0x479e_0000_0000_0000);
    match t {
        NcType::Byte => fill((-127i8).to_be_bytes().to_vec(), Value::from(-127)),
        NcType::UByte => fill(vec![255], Value::from(255)),
        NcType::Short => fill((-32767i16).to_be_bytes().to_vec(), Value::from(-32767)),
        NcType::UShort => fill(65535u16.to_be_bytes().to_vec(), Value::from(65535)),
        NcType::Int => fill(
            (-2_147_483_647i32).to_be_bytes().to_vec(),
            Value::from(-2_147_483_647),
        ),
        NcType::UInt => fill(
            4_294_967_295u32.to_be_bytes().to_vec(),
            Value::from(4_294_967_295u32),
        ),
        NcType::Int64 => fill(
            (-9_223_372_036_854_775_806i64).to_be_bytes().to_vec(),
            Value::from(-9_223_372_036_854_775_806i64),
        ),
        NcType::UInt64 => fill(
            18_446_744_073_709_551_614u64.to_be_bytes().to_vec(),
            Value::from(18_446_744_073_709_551_614u64),
        ),
        NcType::Float => fill(
            NC_FILL_FLOAT.to_be_bytes().to_vec(),
            f32_value(NC_FILL_FLOAT),
        ),
        NcType::Double => fill(
            NC_FILL_DOUBLE.to_be_bytes().to_vec(),
            float_value(NC_FILL_DOUBLE),
        ),
        _ => fill(vec![0], Value::String(String::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_fill_values_are_netcdf_h() {
        assert_eq!(default_fill(&NcType::Short).bytes, vec![0x80, 0x01]);
        assert_eq!(
            default_fill(&NcType::Float).bytes,
            vec![0x7c, 0xf0, 0x00, 0x00]
        );
        assert_eq!(
            default_fill(&NcType::Double).bytes,
            vec![0x47, 0x9e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]
        );
        assert_eq!(
            default_fill(&NcType::Int).value,
            Value::from(-2_147_483_647)
        );
    }
}
