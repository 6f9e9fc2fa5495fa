#!/usr/bin/env python3
"""Check virtual references against the NetCDF files they describe (not measured).

    verify.py --list FILES.txt --json OUT.json [--samples 12] NAME=REFS [NAME=REFS ...]

REFS is a kerchunk JSON file or a kerchunk Parquet directory. Each is opened with xarray
through fsspec's reference filesystem (engine="zarr", consolidated=False, remote_protocol
"file"; Parquet lazily through LazyReferenceMapper) and compared with xarray.open_mfdataset(FILES, combine="nested",
concat_dim="time") of the originals:
  - dimension sizes, and the variables air, uwnd, time, lat, lon present;
  - time (decoded with the CF units/calendar) equal over the whole axis, lat and lon equal;
  - air and uwnd bit for bit (NaN = NaN) at SAMPLES time steps: the first, the last, one at
    each file boundary pair picked at random (seed 0), and random ones in between;
  - air's and uwnd's units attribute;
  - the on-disk chunking reported by the reference (the originals' chunks, from h5py);
  - every chunk reference of air and uwnd (all files, not a sample): the key's grid index must
    point at the same file, byte offset and length as h5py's chunk_iter on the originals
    (the chunk's grid index in its file, shifted by the file's place along time).
Prints one line per output and exits 1 if any output differs.

With more than --mfdataset-limit files (default 1000; the 10 000-file collection) the
originals are not opened as one dataset (10 000 opens and a combine would take minutes and
gigabytes): the times of every file are read with h5py and decoded with xarray's CF decoder,
lat/lon taken from the first file, and the sampled time steps read from the one file that holds
each (xarray.open_dataset), which checks the same things.
"""

import argparse
import json
import os
import sys
import warnings

import fsspec
import h5py

import numpy as np
import xarray as xr

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import same  # noqa: E402

warnings.filterwarnings("ignore", category=RuntimeWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)


def open_refs(path):
    # remote_protocol is given because fsspec 2026.9.0's ReferenceFileSystem otherwise guesses it
    # from the first reference it iterates. Over Parquet (LazyReferenceMapper) with pandas 3, a
    # padding row's missing path reads as NaN (pandas 3's "str" dtype), not None, so it comes
    # back as the reference [nan] instead of "no such key"; when such a row is iterated first
    # (it depends on PYTHONHASHSEED) the open fails with "TypeError: argument of type 'float'
    # is not iterable" (kerchunk's and VirtualiZarr's Parquet alike).
    return xr.open_dataset("reference://", engine="zarr", chunks=None,
                           backend_kwargs={"consolidated": False,
                                           "storage_options": {"fo": path, "remote_protocol": "file"}})


def truth_refs(files, variables=("air", "uwnd")):
    """{(var, grid index in the concatenation): (realpath, offset, size)} from h5py's chunk_iter."""
    truth, t0 = {}, 0
    for path in files:
        real = os.path.realpath(path)
        with h5py.File(path, "r") as f:
            nt = f["time"].shape[0]
            for v in variables:
                d = f[v]
                cs = d.chunks
                shift = t0 // cs[0]
                if t0 % cs[0]:
                    raise ValueError(f"{path}: time offset {t0} is not a multiple of {v}'s chunk {cs[0]}")

                def add(c, v=v, cs=cs, shift=shift):
                    idx = tuple(o // n for o, n in zip(c.chunk_offset, cs))
                    truth[(v, (idx[0] + shift,) + idx[1:])] = (real, c.byte_offset, c.size)
                d.id.chunk_iter(add)
        t0 += nt
    return truth


def compare_refs(path, truth):
    """Every chunk key of truth looked up in the reference set (JSON or Parquet)."""
    fs = fsspec.filesystem("reference", fo=path, remote_protocol="file")
    refs = fs.references
    problems, seps = [], {}
    missing = wrong = inline = 0
    examples = []
    for (v, idx), want in truth.items():
        if v not in seps:
            meta = refs[f"{v}/.zarray"]
            meta = json.loads(meta) if isinstance(meta, (str, bytes)) else meta
            seps[v] = meta.get("dimension_separator", ".")
        key = f"{v}/" + seps[v].join(str(i) for i in idx)
        try:
            got = refs[key]
        except KeyError:
            missing += 1
            if len(examples) < 3:
                examples.append(f"{key} missing")
            continue
        if not isinstance(got, (list, tuple)) or len(got) != 3:
            inline += 1
            continue
        url = str(got[0])
        url = url[len("file://"):] if url.startswith("file://") else url
        if (os.path.realpath(url), int(got[1]), int(got[2])) != want:
            wrong += 1
            if len(examples) < 3:
                examples.append(f"{key} -> {list(got)} (h5py: {list(want)})")
    if missing or wrong or inline:
        problems.append(f"chunk references vs h5py chunk_iter: {missing} missing, {wrong} wrong, {inline} inlined "
                        f"of {len(truth)}" + (": " + "; ".join(examples) if examples else ""))
    return problems


class _Var:
    """What check() asks of a variable of the originals."""

    def __init__(self, values=None, dtype=None, attrs=None, at_step=None):
        self._values, self.dtype, self.attrs, self._at_step = values, dtype, attrs or {}, at_step

    @property
    def values(self):
        return self._values

    def isel(self, time):
        return _Var(values=self._at_step(time))


class PerFileRef:
    """The originals, one file at a time (see the module docs): sizes, time/lat/lon, and the
    values of air and uwnd at one time step."""

    def __init__(self, files):
        self.files = files
        starts, raw = [0], []

        def text(value):
            return value.decode() if isinstance(value, bytes) else value

        for path in files:
            with h5py.File(path, "r") as f:
                t = f["time"]
                raw.append(xr.coding.times.decode_cf_datetime(
                    t[:], text(t.attrs["units"]), text(t.attrs.get("calendar", "standard"))))
                starts.append(starts[-1] + t.shape[0])
        self.starts = np.array(starts)
        first = xr.open_dataset(files[0])
        self.sizes = dict(first.sizes)
        self.sizes["time"] = int(self.starts[-1])
        times = np.concatenate(raw)
        self.variables = {}
        for v in ("time", "lat", "lon", "air", "uwnd"):
            var = first[v]
            if v == "time":
                values = times
            elif v in ("lat", "lon"):
                values = var.values
            else:
                values = None
            self.variables[v] = _Var(values=values, dtype=var.dtype, attrs=dict(var.attrs),
                                     at_step=lambda t, v=v: self._step(v, t))
        first.close()

    def _step(self, var, t):
        i = int(np.searchsorted(self.starts, t, side="right")) - 1
        with xr.open_dataset(self.files[i]) as ds:
            return ds[var].isel(time=t - int(self.starts[i])).values

    def __getitem__(self, name):
        return self.variables[name]


def original_chunks(path, variables=("air", "uwnd")):
    with h5py.File(path, "r") as f:
        return {v: tuple(f[v].chunks) for v in variables}


def check(name, path, ref, steps, truth, chunk_shapes):
    problems = []
    try:
        ds = open_refs(path)
    except Exception as e:  # noqa: BLE001 - report any failure to open
        return {"name": name, "path": path, "ok": False, "problems": [f"cannot open: {type(e).__name__}: {e}"]}
    for v in ("air", "uwnd", "time", "lat", "lon"):
        if v not in ds.variables:
            problems.append(f"variable {v} missing")
    if dict(ds.sizes) != dict(ref.sizes):
        problems.append(f"sizes {dict(ds.sizes)} != {dict(ref.sizes)}")
    if problems:
        return {"name": name, "path": path, "ok": False, "problems": problems}
    for v in ("time", "lat", "lon"):
        if not same(ds[v].values, ref[v].values):
            problems.append(f"{v} values differ (first {ds[v].values[:3]} vs {ref[v].values[:3]})")
        if ds[v].dtype != ref[v].dtype:
            problems.append(f"{v} dtype {ds[v].dtype} != {ref[v].dtype}")
    for v, chunks in chunk_shapes.items():
        if ds[v].dtype != ref[v].dtype:
            problems.append(f"{v} dtype {ds[v].dtype} != {ref[v].dtype}")
        if ds[v].attrs.get("units") != ref[v].attrs.get("units"):
            problems.append(f"{v} units {ds[v].attrs.get('units')!r} != {ref[v].attrs.get('units')!r}")
        got = ds[v].encoding.get("chunks") or ds[v].encoding.get("preferred_chunks")
        if isinstance(got, dict):
            got = tuple(got[d] for d in ds[v].dims)
        if got is not None and tuple(got) != chunks:
            problems.append(f"{v} chunks {tuple(got)} != {chunks}")
        bad = []
        for t in steps:
            try:
                a = ds[v].isel(time=t).values
            except Exception as e:  # noqa: BLE001 - a bad reference may not even decode
                bad.append(f"t={t} (read failed: {type(e).__name__}: {e})")
                continue
            b = ref[v].isel(time=t).values
            if not same(a, b):
                diff = np.nanmax(np.abs(a.astype("f8") - b.astype("f8"))) if a.shape == b.shape else "shape"
                bad.append(f"t={t} (max |diff| {diff})")
        if bad:
            problems.append(f"{v} differs at {len(bad)}/{len(steps)} sampled steps: " + ", ".join(bad[:4]))
    ds.close()
    try:
        problems += compare_refs(path, truth)
    except Exception as e:  # noqa: BLE001
        problems.append(f"cannot compare references: {type(e).__name__}: {e}")
    return {"name": name, "path": path, "ok": not problems, "problems": problems, "steps": [int(s) for s in steps]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--list", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--mfdataset-limit", type=int, default=1000)
    ap.add_argument("outputs", nargs="+")
    args = ap.parse_args()
    with open(args.list) as f:
        files = [line.strip() for line in f if line.strip()]
    ref_kind = "open_mfdataset"
    if len(files) > args.mfdataset_limit:
        ref, ref_kind = PerFileRef(files), "read file by file"
    else:
        ref = xr.open_mfdataset(files, combine="nested", concat_dim="time", data_vars="minimal",
                                coords="minimal", compat="override", parallel=False)
    truth = truth_refs(files)
    chunk_shapes = original_chunks(files[0])
    with h5py.File(files[0], "r") as f:
        per_file = f["time"].shape[0]
    nt = ref.sizes["time"]
    rng = np.random.default_rng(0)
    steps = {0, nt - 1}
    if nt > per_file:
        b = per_file * int(rng.integers(1, nt // per_file))
        steps |= {b - 1, b}
    while len(steps) < min(args.samples, nt):
        steps.add(int(rng.integers(0, nt)))
    steps = sorted(steps)
    results = []
    for spec in args.outputs:
        name, _, path = spec.partition("=")
        r = check(name, path, ref, steps, truth, chunk_shapes)
        results.append(r)
        status = (f"OK (values at {len(steps)} time steps equal the originals ({ref_kind}); all {len(truth)} "
                  f"air/uwnd chunk references equal h5py's chunk_iter)") if r["ok"] else "WRONG: " + "; ".join(r["problems"])
        print(f"verify: {name}: {status}", file=sys.stderr)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
