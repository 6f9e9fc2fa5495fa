"""engine="chunkmill" against xarray's netcdf4 engine on the same files: values, attributes,
encodings, lazy selections, groups, dask threads."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import xarray as xr

import chunkmill
from chunkmill.xarray_backend import ChunkmillBackendEntrypoint


def _same(a: Any, b: Any) -> bool:
    """Equality that takes NaN for NaN and compares arrays by value and dtype."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (np.ndarray, np.generic)) or isinstance(b, (np.ndarray, np.generic)):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype != b.dtype:
            return False
        if a.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    return type(a) is type(b) and a == b


def assert_same_as_netcdf4(path: Any, **kwargs: Any) -> tuple[xr.Dataset, xr.Dataset]:
    ours = xr.open_dataset(path, engine="chunkmill", **kwargs)
    theirs = xr.open_dataset(path, engine="netcdf4", **kwargs)
    xr.testing.assert_identical(ours, theirs)
    assert _same(ours.encoding, theirs.encoding), (ours.encoding, theirs.encoding)
    for name in theirs.variables:
        a, b = ours[name], theirs[name]
        assert a.dtype == b.dtype, name
        assert _same(a.attrs, b.attrs), (name, a.attrs, b.attrs)
        assert _same(a.encoding, b.encoding), (name, a.encoding, b.encoding)
    return ours, theirs


def test_netcdf4_equals_netcdf4_engine(netcdf4_file):
    ours, _ = assert_same_as_netcdf4(netcdf4_file)
    # CF decoding happened (xarray's): noleap times are cftime, packing undone, NaN kept.
    assert ours["time"].dtype == object
    assert ours["packed"].dtype == np.float64
    assert np.isnan(ours["air"].values[0, 0, 0])
    assert list(ours["station"].values) == ["a", "bb", "ccc", "dddd"]


def test_netcdf4_undecoded_equals_netcdf4_engine(netcdf4_file):
    ours, _ = assert_same_as_netcdf4(netcdf4_file, decode_cf=False)
    assert ours["packed"].dtype == np.int16
    assert ours["packed"].attrs["scale_factor"] == np.float64(0.1)


def test_group_equals_netcdf4_engine(netcdf4_file):
    ours, _ = assert_same_as_netcdf4(netcdf4_file, group="/obs/profiles")
    assert ours.attrs == {"kind": "sub"}
    assert ours["code"].values.tolist() == [[b"a", b"b"], [b"c", b"d"], [b"e", b""]]


def test_netcdf3_equals_netcdf4_engine(netcdf3_file):
    ours, _ = assert_same_as_netcdf4(netcdf3_file)
    assert ours.encoding["unlimited_dims"] == {"time"}
    assert ours["label"].values.tolist() == [[b"a", b"b"], [b"c", b"d"], [b"e", b"f"], [b"g", b" "]]
    assert ours["air"].encoding["dtype"] == np.dtype("float32")


def test_drop_variables(netcdf4_file):
    ours, _ = assert_same_as_netcdf4(netcdf4_file, drop_variables=["air", "station"])
    assert "air" not in ours and "packed" in ours


@pytest.mark.parametrize(
    "selection",
    [
        {"time": 3},
        {"time": -1, "lat": slice(1, 3)},
        {"time": slice(None, None, -2), "lon": slice(4, 0, -3)},
        {"time": slice(1, 6, 2), "lat": [3, 0, 2]},
        {"lat": slice(2, 2)},
    ],
)
def test_lazy_selection_equals_netcdf4(netcdf4_file, selection):
    ours = xr.open_dataset(netcdf4_file, engine="chunkmill")["air"].isel(selection)
    theirs = xr.open_dataset(netcdf4_file, engine="netcdf4")["air"].isel(selection)
    xr.testing.assert_identical(ours.load(), theirs.load())


def test_selection_reads_only_the_chunks_it_needs(netcdf4_file, tmp_path):
    # A copy whose chunks (2, 2, 5) but the first are zeroed: a selection inside the first
    # chunk still reads right, one outside reads the damage, so only touched chunks are read.
    damaged = tmp_path / "damaged.nc"
    raw = bytearray(netcdf4_file.read_bytes())
    ds = xr.open_dataset(netcdf4_file, engine="chunkmill")
    good = ds["air"].isel(time=slice(0, 2), lat=slice(0, 2)).values
    native = chunkmill._native.open_file(str(netcdf4_file))
    first = bytes(native.read("air", [0, 0, 0], [2, 2, 5]))
    assert np.array_equal(np.frombuffer(first, "<f4").reshape(2, 2, 5), good, equal_nan=True)
    import h5py

    with h5py.File(netcdf4_file) as f:
        infos = [f["air"].id.get_chunk_info(i) for i in range(f["air"].id.get_num_chunks())]
    for info in infos:
        if info.chunk_offset != (0, 0, 0):
            raw[info.byte_offset : info.byte_offset + info.size] = bytes(info.size)
    damaged.write_bytes(bytes(raw))
    broken = xr.open_dataset(damaged, engine="chunkmill")["air"]
    assert np.array_equal(broken.isel(time=slice(0, 2), lat=slice(0, 2)).values, good, equal_nan=True)
    with pytest.raises(chunkmill.ChunkmillError, match="air"):
        broken.isel(time=5).values


def test_open_mfdataset_parallel_on_dask_threads(collection):
    import dask

    with dask.config.set(scheduler="threads", num_workers=8):
        ours = xr.open_mfdataset(collection, engine="chunkmill", parallel=True, chunks={})
        theirs = xr.open_mfdataset(collection, engine="netcdf4", chunks={})
        xr.testing.assert_identical(ours.load(), theirs.load())
        assert float(ours["air"].mean()) == pytest.approx(float(theirs["air"].mean()))


def test_many_threads_read_one_dataset_at_once(netcdf4_file):
    air = xr.open_dataset(netcdf4_file, engine="chunkmill")["air"]
    expected = xr.open_dataset(netcdf4_file, engine="netcdf4")["air"].values
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda t: air.isel(time=t % 6).values, range(96)))
    for t, values in enumerate(got):
        assert np.array_equal(values, expected[t % 6], equal_nan=True)


def test_references_written_by_virtualize_read_back(collection, tmp_path):
    refs = tmp_path / "refs.json"
    chunkmill.virtualize(collection, concat_dim="time", output=refs)
    ours = xr.open_dataset(refs, engine="chunkmill")
    theirs = xr.open_mfdataset(collection, engine="netcdf4")
    xr.testing.assert_allclose(ours.load(), theirs.load())
    assert ours["air"].attrs == theirs["air"].attrs


def test_guess_can_open(netcdf4_file, netcdf3_file, tmp_path):
    entry = ChunkmillBackendEntrypoint()
    plain = tmp_path / "air_without_suffix"
    plain.write_bytes(netcdf4_file.read_bytes())
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert entry.guess_can_open(netcdf4_file)
    assert entry.guess_can_open(str(netcdf3_file))
    assert entry.guess_can_open(plain)
    assert not entry.guess_can_open(text)
    assert not entry.guess_can_open(tmp_path / "missing")
    assert "chunkmill" in xr.backends.list_engines()


def test_missing_file_is_refused_with_the_commands_message(tmp_path):
    with pytest.raises(chunkmill.RefusedError, match="missing.nc") as e:
        xr.open_dataset(tmp_path / "missing.nc", engine="chunkmill")
    assert isinstance(e.value, chunkmill.ChunkmillError)


def test_not_netcdf_is_refused(tmp_path):
    path = tmp_path / "fake.nc"
    path.write_text("not a netcdf file at all")
    with pytest.raises(chunkmill.RefusedError):
        xr.open_dataset(path, engine="chunkmill")


def test_unknown_group_is_a_usage_error(netcdf4_file):
    with pytest.raises(chunkmill.UsageError, match="no group /nope"):
        xr.open_dataset(netcdf4_file, engine="chunkmill", group="nope")


def test_plain_hdf5_equals_netcdf4_engine(tmp_path):
    import h5py

    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["a"] = np.arange(12.0).reshape(3, 4)
        f["a"].attrs["units"] = "m"
        f["b"] = np.arange(4, dtype=">i2")
        f["scalar"] = np.float32(2.5)
        # (6, 9), not square: a square one gets one phony dimension twice from
        # chunkmill-manifest's scan, where netCDF-C names two (reported, not fixed here).
        partial = f.create_dataset("partial", (6, 9), "f4", chunks=(2, 3), fillvalue=-1.0, compression="gzip")
        partial[0:2, 0:3] = 7.0  # one chunk written, the others read as the fill value
        f.attrs["title"] = "plain"
    ours, theirs = assert_same_as_netcdf4(path)
    assert ours["partial"].values[5, 8] == -1.0 and ours["partial"].values[0, 0] == 7.0
    assert ours["scalar"].values[()] == np.float32(2.5)


def test_datasets_pickle_and_reopen_where_they_are_unpickled(netcdf4_file, collection):
    # dask's process and distributed schedulers pickle the lazy arrays to their workers.
    import pickle

    ds = xr.open_dataset(netcdf4_file, engine="chunkmill")
    back = pickle.loads(pickle.dumps(ds))
    xr.testing.assert_identical(back.load(), xr.open_dataset(netcdf4_file, engine="netcdf4").load())
    virtual = chunkmill.open_virtual_mfdataset(collection, concat_dim="time")
    again = pickle.loads(pickle.dumps(virtual))
    xr.testing.assert_identical(again.load(), virtual.load())


@pytest.mark.parametrize("fmt", ["NETCDF4", "NETCDF3_CLASSIC"])
def test_variables_come_in_file_order(tmp_path, fmt):
    """As the netcdf4 engine lists them (the order they were defined in), not sorted by name."""
    path = tmp_path / "order.nc"
    with netCDF4.Dataset(path, "w", format=fmt) as f:
        f.createDimension("x", 3)
        for name in ["zeta", "alpha", "x", "mid", "beta"]:
            f.createVariable(name, "f4", ("x",))[:] = np.arange(3.0)
    ours = list(xr.open_dataset(path, engine="chunkmill").variables)
    theirs = list(xr.open_dataset(path, engine="netcdf4").variables)
    assert ours == theirs and theirs != sorted(theirs)
    assert [v for v in ours if v != "x"] == ["zeta", "alpha", "mid", "beta"]


@pytest.fixture(scope="module")
def boxes_file(tmp_path_factory) -> Path:
    """Shuffled, deflated and plain arrays whose shapes are not whole numbers of chunks (edge
    chunks run past the end), big- and little-endian, with chunks never written (fill value)."""
    path = tmp_path_factory.mktemp("boxes") / "boxes.nc"
    rng = np.random.default_rng(7)
    with netCDF4.Dataset(path, "w") as f:
        for name, size in (("t", 7), ("y", 6), ("x", 5)):
            f.createDimension(name, size)
        layouts = {
            "slabs": dict(chunksizes=(1, 6, 5), zlib=True, shuffle=True),
            "blocks": dict(chunksizes=(2, 4, 5), zlib=True, shuffle=True, endian="big"),
            "cubes": dict(chunksizes=(3, 3, 2), zlib=False),
        }
        for name, layout in layouts.items():
            v = f.createVariable(name, "f4", ("t", "y", "x"), fill_value=-7.5, **layout)
            v[:5] = rng.random((5, 6, 5)).astype("f4")  # the chunks of t = 5, 6 stay unwritten
    return path


@pytest.mark.parametrize("name", ["slabs", "blocks", "cubes"])
@pytest.mark.parametrize(
    "box",
    [
        (slice(0, 1), slice(None), slice(None)),  # one whole chunk (slabs)
        (slice(0, 4), slice(None), slice(None)),  # whole chunks side by side (slabs, blocks)
        (slice(None), slice(None), slice(None)),  # edge chunks and unwritten ones
        (slice(2, 6), slice(1, 5), slice(0, 3)),  # parts of chunks
        (slice(6, 7), slice(None), slice(None)),  # an unwritten chunk only
    ],
)
def test_boxes_of_whole_and_partial_chunks_equal_netcdf4(boxes_file, name, box):
    with netCDF4.Dataset(boxes_file) as f:
        v = f[name]
        v.set_auto_maskandscale(False)
        expected = np.asarray(v[box]).astype("<f4")
    native = chunkmill._native.open_file(str(boxes_file))
    start = [s.start or 0 for s in box]
    stop = [n if s.stop is None else s.stop for s, n in zip(box, (7, 6, 5), strict=True)]
    got = np.frombuffer(native.read(name, start, stop), "<f4").reshape(expected.shape)
    np.testing.assert_array_equal(got, expected)


def test_guess_can_open_does_not_block_on_a_named_pipe(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    answers: list[bool] = []
    guess = threading.Thread(target=lambda: answers.append(ChunkmillBackendEntrypoint().guess_can_open(str(fifo))),
                             daemon=True)
    guess.start()
    guess.join(10)
    if guess.is_alive():
        # It blocked in open(): a writer releases it, so the test fails instead of hanging.
        with open(fifo, "wb"):
            pass
        guess.join(10)
        pytest.fail("guess_can_open blocked on a named pipe")
    assert answers == [False]
    # Opening it is refused with the command's message, as a device is.
    with pytest.raises(chunkmill.RefusedError, match="not a regular file"):
        xr.open_dataset(fifo, engine="chunkmill")
