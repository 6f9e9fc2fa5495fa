"""The plan's notebook view (``chunkmill._html.plan_html``) and the ``--report`` page of a real
job, rendered in headless Chromium: no console error, nothing fetched from anywhere, a
screenshot kept beside the test's files, and the numbers on the page equal to the plan and
the run as ``chunkmill … --json`` reports them.

Chromium is Debian's ``chromium`` (``scripts/test`` installs it); the tests skip without it,
unless ``CHUNKMILL_REQUIRE_CHROMIUM=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import zarr

import chunkmill
from chunkmill._html import plan_html

from browser import Rendered, find_chromium, render

SCRIPT = Path(sys.executable).parent / "chunkmill"

if find_chromium() is None and os.environ.get("CHUNKMILL_REQUIRE_CHROMIUM") == "1":
    raise RuntimeError("CHUNKMILL_REQUIRE_CHROMIUM=1 but no chromium (install Debian's chromium)")
pytestmark = [
    pytest.mark.skipif(find_chromium() is None, reason="no chromium (Debian's chromium package)"),
    pytest.mark.skipif(not SCRIPT.exists(), reason="the package is not installed in this venv"),
]


def human(n: int) -> str:
    """Bytes as the views print them (SI units), written here from the rule, not the code."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    if n >= 1e3:
        return f"{n / 1e3:.1f} kB"
    return f"{n} B"


class Elements(HTMLParser):
    """Every element of a DOM dump with its attributes and text (text of its descendants
    included), in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.all: list[dict] = []
        self.open: list[dict] = []

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, **{k: v or "" for k, v in attrs}, "text": ""}
        self.all.append(element)
        if tag not in ("meta", "br", "img", "input", "link"):
            self.open.append(element)

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        for element in self.open:
            element["text"] += data

    def having(self, tag: str, cls: str) -> list[dict]:
        return [e for e in self.all if e["tag"] == tag and cls in e.get("class", "").split()]


def elements(dom: str) -> Elements:
    parser = Elements()
    parser.feed(dom)
    return parser


def run(*args) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CHUNKMILL_PROGRAM"}
    done = subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def show(page: Path, tmp_path: Path) -> Rendered:
    """Renders ``page``, keeps its screenshot beside it, and checks what every page must be:
    no console error or exception, nothing asked for but the page itself."""
    shown = render(page)
    (tmp_path / f"{page.stem}.png").write_bytes(shown.screenshot)
    assert shown.screenshot.startswith(b"\x89PNG") and len(shown.screenshot) > 5000
    assert shown.errors() == []
    assert shown.requests == [page.resolve().as_uri()]
    return shown


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A Zarr group of two arrays chunked along time, to be rechunked to whole time series."""
    path = tmp_path_factory.mktemp("views") / "src.zarr"
    group = zarr.open_group(path, mode="w")
    rng = np.random.default_rng(0)
    for name, n in (("air", 60), ("uwnd", 30)):
        data = rng.normal(size=(240, n, n)).astype("f4")
        array = group.create_array(name, shape=data.shape, chunks=(2, n, n), dtype="f4",
                                   dimension_names=["time", "lat", "lon"])
        array[...] = data
    return path


def rechunk_args(source: Path, target: Path) -> list:
    """Many workers in a budget well over the process's baseline: a plan of several stages
    (through intermediates), each of a few small tasks, that runs in about a second."""
    return ["rechunk", source, target, "--chunks", "time=-1,lat=6,lon=6", "--max-mem", "130MB",
            "--workers", "32", "--no-progress"]


@pytest.fixture(scope="module")
def plan(source, tmp_path_factory) -> dict:
    """The plan of that rechunk, as ``chunkmill plan rechunk --json`` prints it."""
    target = tmp_path_factory.mktemp("planned") / "t.zarr"
    return json.loads(run("plan", *rechunk_args(source, target), "--json").stdout)


def check_stage_rows(found: Elements, plan: dict) -> None:
    rows = found.having("tr", "stage")
    assert [r["data-stage"] for r in rows] == [s["name"] for s in plan["stages"]]
    cells = {c: found.having("td", c) for c in ("tasks", "projected", "read", "written")}
    for i, stage in enumerate(plan["stages"]):
        assert cells["tasks"][i]["text"] == str(stage["tasks"])
        for cls, key in (("projected", "projected_mem"), ("read", "bytes_read"), ("written", "bytes_written")):
            assert cells[cls][i]["text"] == human(stage[key])
            assert int(cells[cls][i]["data-bytes"]) == stage[key]
    shares = [e for e in found.all if "data-share" in e]
    assert [s["text"] for s in shares] == [f"{100 * s['projected_mem'] / plan['max_mem']:.1f} %" for s in plan["stages"]]


def test_plan_view_in_chromium_shows_the_plan_json(plan, tmp_path):
    assert len(plan["stages"]) > 1
    page = tmp_path / "plan.html"
    page.write_text(f"<!doctype html><html><head><meta charset=\"utf-8\"><title>plan</title></head>"
                    f"<body>{plan_html(plan)}</body></html>")
    found = elements(show(page, tmp_path).dom)
    check_stage_rows(found, plan)
    total = found.having("span", "total-tasks")[0]
    assert total["text"] == str(plan["tasks"]) == str(sum(s["tasks"] for s in plan["stages"]))
    assert found.having("span", "max-mem")[0]["text"] == human(plan["max_mem"])
    assert found.having("span", "task-budget")[0]["text"] == human(plan["task_budget"])
    assert found.having("span", "largest")[0]["text"] == human(plan["max_projected_mem"])
    assert found.having("span", "total-read")[0]["text"] == human(plan["bytes_read"])


def test_plan_view_escapes_what_it_shows(tmp_path):
    """Text from a plan is shown as text: markup in a label neither renders nor runs."""
    label = "<img src=x onerror=\"console.error('ran')\"> & <b>bold</b>"
    plan = {"plan_id": "<id>", "max_mem": 10_000, "stages": [
        {"name": "00-<s>", "label": label, "tasks": 1, "projected_mem": 20_000,
         "bytes_read": 5, "bytes_written": 5}]}
    page = tmp_path / "escaped.html"
    page.write_text(f"<!doctype html><html><head><meta charset=\"utf-8\"><title>x</title></head><body>{plan_html(plan)}</body></html>")
    found = elements(show(page, tmp_path).dom)
    assert not [e for e in found.all if e["tag"] == "img" or (e["tag"] == "b" and e["text"] == "bold")]
    assert label in [c["text"] for c in found.all if c["tag"] == "td"]
    over = [e for e in found.all if "data-share" in e][0]
    assert over["text"] == "200.0 %" and over["class"] == "over"


def test_plan_view_refuses_what_is_not_a_plan():
    with pytest.raises(chunkmill.UsageError, match="max_mem"):
        plan_html({"plan_id": "x", "stages": []})
    with pytest.raises(chunkmill.UsageError):
        plan_html({"plan_id": object()})


def linear(ticks: list[tuple[float, float]]):
    """The value at a pixel, from the axis's own tick labels (value, pixel)."""
    (v0, p0), (v1, p1) = ticks[0], ticks[-1]
    return lambda p: v0 + (p - p0) * (v1 - v0) / (p1 - p0)


def test_report_page_in_chromium_shows_the_run(source, plan, tmp_path):
    target, page = tmp_path / "t.zarr", tmp_path / "report.html"
    assert len(plan["stages"]) > 1 and plan["tasks"] > len(plan["stages"])
    report = json.loads(run(*rechunk_args(source, target), "--report", page, "--json").stdout)
    assert report["tasks_run"] == plan["tasks"]
    found = elements(show(page, tmp_path).dom)
    check_stage_rows(found, plan)
    assert found.having("span", "tasks-run")[0]["text"] == str(report["tasks_run"])
    assert found.having("span", "budget")[0]["text"] == human(report["max_mem"])
    # Every task has its bar, its projection and its peak RSS, in the stage it belongs to.
    for cls, tag in (("task", "rect"), ("projected", "line"), ("rss", "circle")):
        marks = found.having(tag, cls)
        assert len(marks) == report["tasks_run"]
        per_stage = [sum(1 for m in marks if int(m["data-stage"]) == i) for i in range(len(plan["stages"]))]
        assert per_stage == [s["tasks"] for s in plan["stages"]]
    for mark in found.having("line", "projected"):
        assert int(mark["data-bytes"]) == plan["stages"][int(mark["data-stage"])]["projected_mem"]
    # The y axis is in MB with round tick values, and the budget line sits at the budget on it.
    svg = found.having("svg", "memory")[0]
    mb_ticks = [(float(t["data-mb"]), float(t["y"]) - 4) for t in found.all if "data-mb" in t]
    assert len(mb_ticks) >= 3 and [t[0] for t in mb_ticks] == sorted(t[0] for t in mb_ticks)
    assert all(t["text"] == t["text"].strip() and float(t["text"]) == float(t["data-mb"]) for t in found.all if "data-mb" in t)
    at = linear(mb_ticks)
    budget = [e for e in found.all if e["tag"] == "g" and e.get("class") == "budget"][0]
    budget_line = next(e for e in found.all[found.all.index(budget):] if e["tag"] == "line")
    assert at(float(budget_line["y1"])) == pytest.approx(report["max_mem"] / 1e6, rel=0.01)
    assert budget["text"].strip() == f"budget (--max-mem) {human(report['max_mem'])}"
    assert "memory (MB)" in svg["text"] and "seconds since the first task started" in svg["text"]
    baseline = int(found.having("span", "baseline")[0]["data-bytes"])
    assert 0 < baseline < report["max_mem"]
    for mark in found.having("line", "projected"):
        level = baseline + int(mark["data-bytes"])
        assert at(float(mark["y1"])) == pytest.approx(level / 1e6, rel=0.01)
    for dot in found.having("circle", "rss"):
        assert at(float(dot["cy"])) == pytest.approx(int(dot["data-bytes"]) / 1e6, rel=0.01, abs=0.05)
    # Each stage's span and its row in the run table.
    spans = found.having("rect", "span")
    assert sorted({s["data-stage"] for s in spans}) == sorted(s["name"] for s in plan["stages"])
    seconds_ticks = [float(t["data-seconds"]) for t in found.having("text", "tick") if "data-seconds" in t]
    assert seconds_ticks[0] == 0 and max(float(s["data-end"]) for s in spans) <= seconds_ticks[-1]
    assert max(float(s["data-end"]) for s in spans) <= report["seconds"]
    runs = found.having("td", "tasks-run")
    assert [int(r["text"]) for r in runs] == [s["tasks"] for s in plan["stages"]]
