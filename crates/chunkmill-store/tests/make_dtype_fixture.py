"""Writes fixtures/zarr_python_dtypes.json: for each data type, the metadata zarr-python writes
for it in Zarr v2 and v3 (dtype / data_type, fill_value, codecs), which tests/dtype.rs parses
and prints back. Run with the oracle venv: python make_dtype_fixture.py"""

import json
import pathlib
import warnings

import numpy as np
import zarr
from zarr.core.dtype import VariableLengthBytes, VariableLengthUTF8

warnings.simplefilter("ignore")

CASES = [
    ("bool", True), ("int8", -5), ("uint8", 200), ("int16", -300), ("uint16", 60000),
    ("int32", -70000), ("uint32", 4000000000), ("int64", -(2**62)), ("uint64", 2**64 - 1),
    ("float16", 1.5), ("float16", np.nan), ("float32", np.nan), ("float32", np.inf),
    ("float64", -np.inf), ("float64", 0.25), ("complex64", 1 + 2j),
    ("complex128", complex(np.nan, np.inf)), ("M8[ns]", np.datetime64("NaT")),
    ("M8[s]", np.datetime64("2000-01-01T00:00:00")), ("M8[D]", np.datetime64("1999-12-31")),
    ("m8[ms]", np.timedelta64(5, "ms")), ("m8[ns]", np.timedelta64("NaT")),
    ("S5", b"ab"), ("U4", "xy"), ("V3", b"\x01\x02\x03"),
]


def numpy_name(dtype):
    """numpy's name for the fixed-size types, `dtype.str` for bytes, text and raw."""
    return dtype.str if dtype.kind in "SUV" else str(dtype)


def entry(array, fmt):
    """The metadata document as zarr-python stored it (its JSON, NaN as "NaN")."""
    stored = array.store_path.store._store_dict
    md = json.loads(stored["zarr.json" if fmt == 3 else ".zarray"].to_bytes())
    return {
        "zarr_format": fmt,
        "data_type": md["dtype"] if fmt == 2 else md["data_type"],
        "fill_value": md["fill_value"],
        "codecs": (md.get("filters") or []) if fmt == 2 else md["codecs"],
        "numpy": numpy_name(array.dtype),
        "itemsize": array.dtype.itemsize,
    }


def main():
    out = []
    for fmt in (2, 3):
        for t, fill in CASES:
            a = zarr.create_array(store=zarr.storage.MemoryStore(), shape=(3,), chunks=(2,), dtype=np.dtype(t),
                                  zarr_format=fmt, fill_value=fill)
            out.append(entry(a, fmt))
        for dt in (VariableLengthUTF8(), VariableLengthBytes()):
            a = zarr.create_array(store=zarr.storage.MemoryStore(), shape=(3,), chunks=(2,), dtype=dt, zarr_format=fmt)
            e = entry(a, fmt)
            e["numpy"] = {"VariableLengthUTF8": "string", "VariableLengthBytes": "variable_length_bytes"}[type(dt).__name__]
            e["itemsize"] = None
            out.append(e)
    path = pathlib.Path(__file__).parent / "fixtures" / "zarr_python_dtypes.json"
    path.write_text(json.dumps({"zarr": zarr.__version__, "numpy": np.__version__, "cases": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
