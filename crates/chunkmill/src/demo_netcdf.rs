//! The NetCDF files of `chunkmill demo`, written as NetCDF-3 classic (CDF-1).
//!
//! The classic format is a header (dimensions, attributes, variables with the offset of their
//! data) followed by each variable's values, big-endian, padded to 4 bytes: small enough to
//! write here, read by netCDF-C, netCDF4-python, xarray and chunkmill alike, so the demo needs
//! no NetCDF library. Only what the demo writes is supported: fixed-size dimensions, text and
//! double attributes, float and double variables.

use std::path::Path;

const NC_DIMENSION: u32 = 0x0A;
const NC_VARIABLE: u32 = 0x0B;
const NC_ATTRIBUTE: u32 = 0x0C;
const NC_CHAR: u32 = 2;
const NC_FLOAT: u32 = 5;
const NC_DOUBLE: u32 = 6;

/// An attribute value.
pub enum Attr {
    Text(String),
    Double(f64),
}

/// Values of a variable.
pub enum Values {
    Float(Vec<f32>),
    Double(Vec<f64>),
}

/// A variable over some of the file's dimensions (indices into its dimension list).
pub struct Var {
    pub name: String,
    pub dims: Vec<usize>,
    pub attrs: Vec<(String, Attr)>,
    pub values: Values,
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    put_u32(out, name.len() as u32);
    out.extend_from_slice(name.as_bytes());
    pad(out);
}

fn put_attrs(out: &mut Vec<u8>, attrs: &[(String, Attr)]) {
    if attrs.is_empty() {
        // ABSENT: a zero tag and a zero count.
        put_u32(out, 0);
        put_u32(out, 0);
        return;
    }
    put_u32(out, NC_ATTRIBUTE);
    put_u32(out, attrs.len() as u32);
    for (name, value) in attrs {
        put_name(out, name);
        match value {
            Attr::Text(text) => {
                put_u32(out, NC_CHAR);
                put_u32(out, text.len() as u32);
                out.extend_from_slice(text.as_bytes());
                pad(out);
            }
            Attr::Double(v) => {
                put_u32(out, NC_DOUBLE);
                put_u32(out, 1);
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
}

fn data(values: &Values) -> Vec<u8> {
    let mut out: Vec<u8> = match values {
        Values::Float(v) => v.iter().flat_map(|x| x.to_be_bytes()).collect(),
        Values::Double(v) => v.iter().flat_map(|x| x.to_be_bytes()).collect(),
    };
    pad(&mut out);
    out
}

/// The header, with each variable's data at the offsets in `begins`.
fn header(
    dims: &[(&str, u64)],
    attrs: &[(String, Attr)],
    vars: &[Var],
    sizes: &[usize],
    begins: &[u32],
) -> Vec<u8> {
    let mut out = b"CDF\x01".to_vec();
    put_u32(&mut out, 0); // numrecs: no record dimension
    put_u32(&mut out, NC_DIMENSION);
    put_u32(&mut out, dims.len() as u32);
    for (name, len) in dims {
        put_name(&mut out, name);
        put_u32(&mut out, *len as u32);
    }
    put_attrs(&mut out, attrs);
    put_u32(&mut out, NC_VARIABLE);
    put_u32(&mut out, vars.len() as u32);
    for ((var, size), begin) in vars.iter().zip(sizes).zip(begins) {
        put_name(&mut out, &var.name);
        put_u32(&mut out, var.dims.len() as u32);
        for &d in &var.dims {
            put_u32(&mut out, d as u32);
        }
        put_attrs(&mut out, &var.attrs);
        put_u32(
            &mut out,
            match var.values {
                Values::Float(_) => NC_FLOAT,
                Values::Double(_) => NC_DOUBLE,
            },
        );
        put_u32(&mut out, *size as u32);
        put_u32(&mut out, *begin);
    }
    out
}

/// Writes a NetCDF-3 classic file: fixed dimensions `dims`, global attributes `attrs`.
pub fn write(
    path: &Path,
    dims: &[(&str, u64)],
    attrs: &[(String, Attr)],
    vars: &[Var],
) -> std::io::Result<()> {
    let blobs: Vec<Vec<u8>> = vars.iter().map(|v| data(&v.values)).collect();
    let sizes: Vec<usize> = blobs.iter().map(Vec::len).collect();
    // The header's length does not depend on the offsets it holds (4 bytes each in CDF-1).
    let length = header(dims, attrs, vars, &sizes, &vec![0; vars.len()]).len();
    let mut begins = Vec::with_capacity(vars.len());
    let mut offset = length;
    for size in &sizes {
        begins.push(u32::try_from(offset).map_err(std::io::Error::other)?);
        offset += size;
    }
    let mut out = header(dims, attrs, vars, &sizes, &begins);
    for blob in blobs {
        out.extend_from_slice(&blob);
    }
    std::fs::write(path, out)
}
