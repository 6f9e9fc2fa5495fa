//! Format detection from the first bytes of a file.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::source::RangeSource;

/// The HDF5 signature, `\x89HDF\r\n\x1a\n`.
pub const HDF5_SIGNATURE: [u8; 8] = [0x89, b'H', b'D', b'F', 0x0D, 0x0A, 0x1A, 0x0A];

/// The container format of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Format {
    /// HDF5, NetCDF-4 included (NetCDF-4 is HDF5 with conventions; see
    /// [`Inventory::netcdf4`](crate::Inventory::netcdf4)).
    Hdf5 {
        /// Bytes before the superblock: 0, or a user block of 512, 1024, 2048, … bytes.
        /// Every address in the file is relative to this.
        superblock_offset: u64,
    },
    /// NetCDF-3 classic (`CDF\x01`): 32-bit offsets.
    #[serde(rename = "netcdf3_classic")]
    NetCdf3Classic,
    /// NetCDF-3 64-bit offset (`CDF\x02`).
    #[serde(rename = "netcdf3_64bit_offset")]
    NetCdf3Offset64,
    /// NetCDF-3 64-bit data, CDF-5 (`CDF\x05`): 64-bit counts and the unsigned and 64-bit types.
    #[serde(rename = "netcdf3_cdf5")]
    NetCdf3Cdf5,
}

impl Format {
    /// Whether this is one of the three NetCDF-3 formats.
    pub fn is_netcdf3(self) -> bool {
        matches!(
            self,
            Format::NetCdf3Classic | Format::NetCdf3Offset64 | Format::NetCdf3Cdf5
        )
    }
}

/// Detects the format of `source` from its magic bytes: a NetCDF-3 magic at 0, or the HDF5
/// signature at 0, 512, 1024, 2048, … (the superblock follows a user block of any power of
/// two from 512 bytes).
///
/// # Errors
/// [`Error::NotHdf5OrNetcdf`] when neither is found (an empty file included), [`Error::Read`]
/// if a read fails.
pub fn detect_format(source: &dyn RangeSource) -> Result<Format> {
    let size = source.size();
    let read8 = |offset: u64| -> Result<[u8; 8]> {
        let bytes = source.read_range(offset, 8).map_err(|e| Error::Read {
            file: source.name().to_string(),
            offset,
            len: 8,
            source: e,
        })?;
        <[u8; 8]>::try_from(bytes.as_ref()).map_err(|_| Error::Read {
            file: source.name().to_string(),
            offset,
            len: 8,
            source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read"),
        })
    };
    let not_ours = || Error::NotHdf5OrNetcdf {
        file: source.name().to_string(),
    };
    if size < 8 {
        return Err(not_ours());
    }
    let head = read8(0)?;
    if &head[..3] == b"CDF" {
        return match head[3] {
            1 => Ok(Format::NetCdf3Classic),
            2 => Ok(Format::NetCdf3Offset64),
            5 => Ok(Format::NetCdf3Cdf5),
            _ => Err(not_ours()),
        };
    }
    let mut offset = 0u64;
    loop {
        let magic = if offset == 0 { head } else { read8(offset)? };
        if magic == HDF5_SIGNATURE {
            return Ok(Format::Hdf5 {
                superblock_offset: offset,
            });
        }
        offset = if offset == 0 {
            512
        } else {
            offset.saturating_mul(2)
        };
        if offset.saturating_add(8) > size {
            return Err(not_ours());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemorySource;

    fn detect(bytes: Vec<u8>) -> Result<Format> {
        detect_format(&MemorySource::new("t", bytes))
    }

    #[test]
    fn finds_each_magic() -> Result<()> {
        assert_eq!(detect(b"CDF\x01\0\0\0\0".to_vec())?, Format::NetCdf3Classic);
        assert_eq!(
            detect(b"CDF\x02\0\0\0\0".to_vec())?,
            Format::NetCdf3Offset64
        );
        assert_eq!(detect(b"CDF\x05\0\0\0\0".to_vec())?, Format::NetCdf3Cdf5);
        let mut h5 = HDF5_SIGNATURE.to_vec();
        h5.resize(100, 0);
        assert_eq!(
            detect(h5)?,
            Format::Hdf5 {
                superblock_offset: 0
            }
        );
        let mut ub = vec![0u8; 1024];
        ub.extend_from_slice(&HDF5_SIGNATURE);
        ub.resize(4000, 0);
        assert_eq!(
            detect(ub)?,
            Format::Hdf5 {
                superblock_offset: 1024
            }
        );
        Ok(())
    }

    #[test]
    fn refuses_anything_else_with_the_file_name() {
        for bytes in [Vec::new(), b"CDF\x03\0\0\0\0".to_vec(), vec![7u8; 5000]] {
            let message = detect(bytes).err().map(|e| e.to_string());
            assert_eq!(message.as_deref(), Some("t: not an HDF5 or NetCDF file"));
        }
    }
}
