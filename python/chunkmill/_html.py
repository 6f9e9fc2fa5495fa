"""HTML views for notebooks: a plan as a compact table (stages, tasks, projected memory per
task drawn against the budget, bytes read and written).

The fragment is rendered in Rust by the same code as the plan part of the ``--report`` page,
so a notebook and a report show the same numbers in the same layout.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from chunkmill import _native


def plan_html(plan: Mapping[str, Any]) -> str:
    """The plan as an HTML fragment for ``_repr_html_``.

    ``plan`` is a plan as ``chunkmill plan rechunk … --json`` prints it (a mapping with
    ``plan_id``, ``max_mem`` and ``stages``, each stage with ``name``, ``label``, ``tasks``,
    ``projected_mem``, ``bytes_read`` and ``bytes_written``; ``task_budget``,
    ``baseline_mem``, ``bytes_intermediate`` and ``job`` are shown when present, other keys
    ignored). Every text is escaped; every number carries its exact value in a ``data-``
    attribute.

    >>> plan = {"plan_id": "3f2a", "max_mem": 100_000_000, "stages": [
    ...     {"name": "00-air", "label": "air: <copy>", "tasks": 4, "projected_mem": 25_000_000,
    ...      "bytes_read": 8_000_000, "bytes_written": 8_000_000}]}
    >>> page = plan_html(plan)
    >>> "air: &lt;copy&gt;" in page and "25.0 MB" in page and "25.0 %" in page
    True

    Raises :class:`chunkmill.UsageError` when ``plan`` lacks a field the view needs.
    """
    try:
        text = json.dumps(plan)
    except (TypeError, ValueError) as e:
        raise _native.UsageError(f"not a chunkmill plan: {e}") from e
    return _native.plan_html(text)
