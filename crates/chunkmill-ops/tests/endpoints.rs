//! The composed endpoints convert builds (a window, a concatenation, tiles, a shifted output)
//! read and written over `memory://` stores. Every expected value is computed here from the
//! formula the source was written with, index by index, not by chunkmill's own region code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chunkmill_exec::{Cancel, TaskRunner};
use chunkmill_grid::{AxisChunks, CoordIter, Grid, Region};
use chunkmill_ops::tasks::StageRunner;
use chunkmill_plan::{AxisWindow, CopyStage, Endpoint, Stage, StageKind, ValueMap};
use chunkmill_store::zarr::{self, ArraySpec, Compressor, Encoding, ZarrArray};
use chunkmill_store::Store;
use serde_json::json;

/// A Zarr v3 array at `memory://name` whose element at `p` is `value(p)` (`item` bytes, native
/// order), stored in chunks of `chunks`; chunks listed in `skip` are never written.
fn source(
    name: &str,
    dtype: &str,
    shape: &[u64],
    chunks: &[u64],
    fill: serde_json::Value,
    value: &dyn Fn(&[u64]) -> Vec<u8>,
) -> Endpoint {
    let url = format!("memory://endpoints-{name}");
    let store = Store::open(&url).unwrap();
    store.erase_prefix("").unwrap();
    zarr::create_array(
        &store,
        &ArraySpec {
            path: String::new(),
            zarr_format: 3,
            shape: shape.to_vec(),
            dtype: chunkmill_store::DataType::from_name(dtype).unwrap(),
            chunks: chunks.to_vec(),
            inner_chunks: None,
            fill_value: fill,
            encoding: Encoding::Compressor(Compressor::Zstd(1)),
            dimension_names: None,
            attributes: serde_json::Map::new(),
        },
    )
    .unwrap();
    let array = ZarrArray::open(&store, "").unwrap();
    let fill = array.fill_bytes().to_vec();
    let grid = Grid::regular(shape, chunks).unwrap();
    for c in CoordIter::new(grid.counts().into_iter().map(|k| 0..k).collect()) {
        let nominal = c
            .iter()
            .zip(chunks)
            .map(|(&i, &s)| i * s..(i + 1) * s)
            .collect();
        let bytes: Vec<u8> = CoordIter::new(nominal)
            .flat_map(|p| {
                if p.iter().zip(shape).all(|(x, n)| x < n) {
                    value(&p)
                } else {
                    fill.clone()
                }
            })
            .collect();
        array.write_chunk(&c, bytes).unwrap();
    }
    Endpoint::Zarr {
        url,
        path: String::new(),
        grid,
    }
}

fn rectilinear(bounds: &[u64]) -> AxisChunks {
    AxisChunks::rectilinear(bounds.to_vec()).unwrap()
}

fn read(endpoint: &Endpoint, region: &[std::ops::Range<u64>], item: usize) -> Vec<u8> {
    StageRunner::new()
        .read_region(endpoint, &Region::new(region.to_vec()), item)
        .unwrap()
}

fn i32s(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks(4)
        .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
        .collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks(4)
        .map(|b| f32::from_ne_bytes(b.try_into().unwrap()))
        .collect()
}

/// The expected values of `region`, C order, from `at(index)`.
fn expected<T>(region: &[std::ops::Range<u64>], at: impl Fn(&[u64]) -> T) -> Vec<T> {
    CoordIter::new(region.to_vec()).map(|p| at(&p)).collect()
}

const MISSING: i16 = -999;

/// int16 source: 100 i + j, but MISSING at (4, 5).
fn packed(p: &[u64]) -> i16 {
    if p == [4, 5] {
        MISSING
    } else {
        (p[0] * 100 + p[1]) as i16
    }
}

#[test]
fn window_reverses_crops_and_unpacks_values() {
    let src = source("window", "int16", &[7, 10], &[3, 4], json!(0), &|p| {
        packed(p).to_ne_bytes().to_vec()
    });
    // Rows 2..6 backwards, columns 1..9; cut where the source's chunks are cut (rows 3 and 6
    // of the source are output rows 3 and 0; columns 4 and 8 are output columns 3 and 7).
    let window = Endpoint::Window {
        source: Box::new(src.clone()),
        axes: vec![
            AxisWindow {
                start: 2,
                len: 4,
                reverse: true,
            },
            AxisWindow {
                start: 1,
                len: 8,
                reverse: false,
            },
        ],
        values: Some(ValueMap {
            from: "int16".into(),
            to: "float32".into(),
            missing: vec![f64::from(MISSING)],
            scale: Some(0.5),
            offset: Some(10.0),
            compute: None,
        }),
        grid: Grid::new(vec![rectilinear(&[0, 3, 4]), rectilinear(&[0, 3, 7, 8])]),
    };
    let want = |p: &[u64]| {
        let v = packed(&[5 - p[0], 1 + p[1]]);
        if v == MISSING {
            f32::NAN
        } else {
            (f64::from(v) * 0.5 + 10.0) as f32
        }
    };
    for region in [vec![0..4, 0..8], vec![1..3, 2..6], vec![3..4, 7..8]] {
        let got = f32s(&read(&window, &region, 4));
        let want = expected(&region, want);
        assert_eq!(got.len(), want.len());
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g == w || (g.is_nan() && w.is_nan()),
                "{region:?} #{k}: {g} != {w}"
            );
        }
    }
    // The missing source value (4, 5) is output (1, 4): NaN, so the check above saw it.
    assert!(f32s(&read(&window, &[1..2, 4..5], 4))[0].is_nan());

    // Without a value map the window keeps the source's values, reversed along columns now.
    let plain = Endpoint::Window {
        source: Box::new(src),
        axes: vec![
            AxisWindow {
                start: 0,
                len: 7,
                reverse: false,
            },
            AxisWindow {
                start: 3,
                len: 6,
                reverse: true,
            },
        ],
        values: None,
        grid: Grid::new(vec![rectilinear(&[0, 3, 6, 7]), rectilinear(&[0, 1, 5, 6])]),
    };
    let got: Vec<i16> = read(&plain, &[0..7, 0..6], 2)
        .chunks(2)
        .map(|b| i16::from_ne_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got, expected(&[0..7, 0..6], |p| packed(&[p[0], 8 - p[1]])));
}

#[test]
fn concat_joins_parts_along_an_axis() {
    let a = |p: &[u64]| (p[0] * 10 + p[1]) as i32;
    let b = |p: &[u64]| 1000 + (p[0] * 10 + p[1]) as i32;
    let part_a = source("concat-a", "int32", &[5, 4], &[2, 4], json!(-1), &|p| {
        a(p).to_ne_bytes().to_vec()
    });
    let part_b = source("concat-b", "int32", &[3, 4], &[3, 2], json!(-1), &|p| {
        b(p).to_ne_bytes().to_vec()
    });
    let concat = Endpoint::Concat {
        axis: 0,
        parts: vec![part_a, part_b],
        grid: Grid::new(vec![
            rectilinear(&[0, 2, 4, 5, 8]),
            AxisChunks::regular(2, 4).unwrap(),
        ]),
    };
    let want = |p: &[u64]| {
        if p[0] < 5 {
            a(p)
        } else {
            b(&[p[0] - 5, p[1]])
        }
    };
    for region in [
        vec![0..8, 0..4],
        vec![3..7, 1..3],
        vec![5..8, 0..2],
        vec![4..5, 3..4],
    ] {
        assert_eq!(
            i32s(&read(&concat, &region, 4)),
            expected(&region, want),
            "{region:?}"
        );
    }
}

#[test]
fn tiles_stack_blocks_along_a_new_first_axis() {
    let s = |p: &[u64]| (p[0] * 100 + p[1]) as i32;
    let src = source("tiles", "int32", &[6, 8], &[3, 4], json!(-1), &|p| {
        s(p).to_ne_bytes().to_vec()
    });
    // Both axes tiled: 2 × 2 tiles of 3 × 4, tile t at block (t / 2, t % 2).
    let both = Endpoint::Tiles {
        source: Box::new(src.clone()),
        sizes: vec![Some(3), Some(4)],
        slots: vec![Some(0), Some(1)],
        counts: vec![2, 2],
        grid: Grid::regular(&[4, 3, 4], &[1, 3, 4]).unwrap(),
    };
    let region = [0..4, 0..3, 0..4];
    assert_eq!(
        i32s(&read(&both, &region, 4)),
        expected(&region, |p| s(&[
            (p[0] / 2) * 3 + p[1],
            (p[0] % 2) * 4 + p[2]
        ]))
    );
    // Only rows tiled, in tiles of 2 that cross the source's chunk boundary at row 3; columns
    // keep the source's chunks.
    let rows = Endpoint::Tiles {
        source: Box::new(src),
        sizes: vec![Some(2), None],
        slots: vec![Some(0), None],
        counts: vec![3],
        grid: Grid::regular(&[3, 2, 8], &[1, 2, 4]).unwrap(),
    };
    for region in [vec![0..3, 0..2, 0..8], vec![1..2, 0..2, 2..7]] {
        assert_eq!(
            i32s(&read(&rows, &region, 4)),
            expected(&region, |p| s(&[p[0] * 2 + p[1], p[2]])),
            "{region:?}"
        );
    }
}

#[test]
fn shifted_output_writes_chunks_further_on_and_is_never_read() {
    let s = |p: &[u64]| (p[0] * 10 + p[1]) as i32;
    let src = source("shift-src", "int32", &[4, 4], &[2, 4], json!(-1), &|p| {
        s(p).to_ne_bytes().to_vec()
    });
    // The existing array: 6 rows, chunks of 2, every element 7 so far.
    let target = source(
        "shift-target",
        "int32",
        &[6, 4],
        &[2, 4],
        json!(-1),
        &|_| 7i32.to_ne_bytes().to_vec(),
    );
    let shifted = Endpoint::Shifted {
        inner: Box::new(target.clone()),
        chunk_offset: vec![1, 0],
        grid: Grid::regular(&[4, 4], &[2, 4]).unwrap(),
    };
    let stage = Stage {
        name: "s0".into(),
        label: "append".into(),
        kind: StageKind::Copy(CopyStage {
            input: src,
            output: shifted.clone(),
            blocks: Grid::regular(&[4, 4], &[2, 4]).unwrap(),
            item_size: 4,
        }),
        projected_mem: 0,
        bytes_read: 0,
        bytes_written: 0,
    };
    let runner = StageRunner::new();
    for task in 0..stage.tasks() {
        runner.run(&stage, task, &Cancel::new()).unwrap();
    }
    // Rows 0..2 keep their 7s; rows 2..6 are the source's rows 0..4.
    assert_eq!(
        i32s(&read(&target, &[0..6, 0..4], 4)),
        expected(&[0..6, 0..4], |p| if p[0] < 2 {
            7
        } else {
            s(&[p[0] - 2, p[1]])
        })
    );
    let err = StageRunner::new()
        .read_region(&shifted, &Region::new(vec![0..2, 0..4]), 4)
        .unwrap_err();
    assert!(err.contains("never read"), "{err}");
}
