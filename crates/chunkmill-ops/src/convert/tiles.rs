//! `convert --tile`: non-overlapping tiles of some dimensions stacked along a new first
//! dimension `tile`, one tile per chunk, for machine-learning caches.

use std::collections::BTreeMap;

use chunkmill_grid::{AxisChunks, Grid};
use chunkmill_plan::Endpoint;
use chunkmill_store::zarr::ArrayInfo;
use serde_json::Value;

use super::{Misalignment, OutputArray, Renames};
use crate::job::plan::last_segment;
use crate::OpsError;

/// `--tile`: the tiled dimensions, their tile sizes and tile counts.
pub(crate) struct Tiling {
    /// (dimension, tile size, tiles along it), in the order given.
    dims: Vec<(String, u64, u64)>,
}

impl Tiling {
    pub(crate) fn new(
        tile: &[(String, u64)],
        dim_len: &BTreeMap<String, u64>,
        ranges: &BTreeMap<String, std::ops::Range<u64>>,
    ) -> Result<Self, OpsError> {
        let mut dims = Vec::new();
        for (dim, size) in tile {
            let len = match ranges.get(dim) {
                Some(r) => r.end - r.start,
                None => *dim_len.get(dim).ok_or_else(|| {
                    OpsError::Usage(format!(
                        "--tile {dim}: no dimension '{dim}'; dimensions: {}",
                        dim_len.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })?,
            };
            if *size == 0 || *size > len {
                return Err(OpsError::Refused(format!(
                    "--tile {dim}={size}: {dim} has {len} elements (after the selection): a tile must hold 1 to {len}"
                )));
            }
            dims.push((dim.clone(), *size, len / size));
        }
        Ok(Self { dims })
    }

    fn count(&self) -> u64 {
        self.dims.iter().map(|(_, _, c)| c).product()
    }

    /// `output` cut in tiles when it has a tiled dimension (`dims`: its source dimension
    /// names), with the read amplification of tiles that cut through source chunks.
    pub(crate) fn apply(
        &self,
        output: OutputArray,
        dims: &[Option<String>],
        spec: &crate::spec::ChunkSpec,
        renames: &Renames<'_>,
    ) -> Result<Option<(OutputArray, Option<Misalignment>)>, OpsError> {
        let slots: Vec<Option<usize>> = dims
            .iter()
            .map(|d| {
                d.as_ref()
                    .and_then(|d| self.dims.iter().position(|(t, _, _)| t == d))
            })
            .collect();
        if slots.iter().all(Option::is_none) {
            return Ok(None);
        }
        let sizes: Vec<Option<u64>> = slots.iter().map(|s| s.map(|k| self.dims[k].1)).collect();
        let counts: Vec<u64> = self.dims.iter().map(|(_, _, c)| *c).collect();
        let info = &output.info;
        let source_grid = output.input.grid();
        let mut axes = vec![AxisChunks::regular(1, self.count()).map_err(OpsError::from)?];
        let mut shape = vec![self.count()];
        let mut chunks = vec![1];
        let mut names = vec![Some("tile".to_string())];
        let mut read = 1.0;
        let mut suggestions = Vec::new();
        for (a, size) in sizes.iter().enumerate() {
            let name = info.dimension_names.as_ref().and_then(|d| d[a].clone());
            names.push(name.clone());
            match size {
                Some(size) => {
                    axes.push(AxisChunks::regular(*size, *size).map_err(OpsError::from)?);
                    shape.push(*size);
                    chunks.push(*size);
                    let chunk = info.chunks[a];
                    if size % chunk != 0 {
                        // Each tile decodes every source chunk it meets, whole.
                        let count = self.dims[slots[a].unwrap_or(0)].2;
                        let decoded: u64 = (0..count)
                            .map(|i| {
                                let (start, end) = (i * size, (i + 1) * size);
                                (end.div_ceil(chunk) - start / chunk) * chunk
                            })
                            .sum();
                        read *= decoded as f64 / (count * size) as f64;
                        let better = ((*size as f64 / chunk as f64).round() as u64).max(1) * chunk;
                        suggestions
                            .push(format!("{}={better}", dims[a].clone().unwrap_or_default()));
                    }
                }
                None => {
                    axes.push(source_grid.axes()[a].clone());
                    shape.push(info.shape[a]);
                    let named = match spec {
                        crate::spec::ChunkSpec::ByName(named) => named
                            .iter()
                            .find(|(n, _)| Some(n) == name.as_ref())
                            .map(|(_, s)| s.unwrap_or(info.shape[a]).min(info.shape[a]).max(1)),
                        crate::spec::ChunkSpec::ByAxis(_) => {
                            return Err(OpsError::Usage(
                                "--tile needs --chunks by dimension name (time=-1)".into(),
                            ))
                        }
                    };
                    chunks.push(named.unwrap_or(info.chunks[a]));
                }
            }
        }
        let is_tiled_coordinate = info.shape.len() == 1
            && names[1]
                .as_deref()
                .is_some_and(|d| last_segment(&info.path) == d);
        let mut tiled_info = ArrayInfo {
            shape,
            chunks: chunks.clone(),
            dimension_names: Some(names),
            ..info.clone()
        };
        if is_tiled_coordinate {
            // A 2-d coordinate cannot keep its dimension's name in xarray: lat → tile_lat.
            let renamed = renames.apply_path(&tiled_info.path);
            tiled_info.path = match renamed.rsplit_once('/') {
                Some((group, last)) => format!("{group}/tile_{last}"),
                None => format!("tile_{renamed}"),
            };
        } else {
            let coordinates: Vec<String> = self
                .dims
                .iter()
                .filter(|(d, _, _)| dims.iter().any(|x| x.as_deref() == Some(d)))
                .map(|(d, _, _)| format!("tile_{}", renames.apply(d)))
                .collect();
            tiled_info
                .attributes
                .insert("coordinates".into(), Value::String(coordinates.join(" ")));
        }
        // A coordinate is read whole at once whatever its chunks: not worth a warning.
        let amplification = (read > 1.0 && !is_tiled_coordinate).then(|| Misalignment {
            array: String::new(),
            amplification: read,
            suggestion: format!("--tile {}", suggestions.join(",")),
        });
        Ok(Some((
            OutputArray {
                source_key: output.source_key,
                info: tiled_info,
                input: Endpoint::Tiles {
                    source: Box::new(output.input),
                    sizes,
                    slots,
                    counts,
                    grid: Grid::new(axes),
                },
                extra_task_mem: output.extra_task_mem,
                read_factor: output.read_factor * read,
                chunks: Some(chunks),
            },
            amplification,
        )))
    }
}
