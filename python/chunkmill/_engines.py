"""Where the tasks of a job run, from Python: the command's own executors (``threads``,
``processes``, ``slurm``) in Rust, or a distributed engine (a ``dask.distributed.Client``,
Lithops) that runs slices of each stage in its own worker processes.

A distributed run follows the command's batch-engine protocol: the job is prepared (plan and
target metadata written, as ``--prepare``), each stage's tasks are cut in contiguous slices
that the engine runs with ``chunkmill worker``'s library call, all slices of a stage finish
before the next stage starts (the stage barrier), and the job is finished by a resumed run
(``--resume``: consolidated metadata, intermediates deleted, the work dir closed), which also
runs on threads any task the engine left undone.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any

from chunkmill import _native

__all__ = ["run"]

# The executors the command has; the others are engines of this module.
NATIVE = ("threads", "processes", "slurm")

# How long a Lithops stage may take before the run gives up (seconds): Lithops has been seen
# to hang on a retried task, and a hung interpreter is worse than a failure that resumes.
LITHOPS_TIMEOUT = 3600


def run_slice(plan: str, stage: str, start: int, end: int, retries: int) -> dict[str, Any]:
    """Runs tasks ``start..end`` of one stage of the stored plan (in an engine's worker)."""
    result: dict[str, Any] = json.loads(_native.run_worker(plan, stage, start, end, 1, retries))
    return result


class _Progress:
    """A tqdm bar over tasks when tqdm is installed and `enabled`, else nothing."""

    def __init__(self, enabled: bool | None, description: str) -> None:
        self.bar = None
        if enabled is False:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            if enabled:
                raise _native.UsageError("progress=True needs tqdm (pip install tqdm)") from None
            return
        self.bar = tqdm(total=0, unit="task", desc=description, leave=False)

    def update(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _program() -> None:
    """Workers of the ``processes`` and ``slurm`` executors start the ``chunkmill`` command:
    this interpreter is not it, so the package's script beside it is named (unless set)."""
    if "CHUNKMILL_PROGRAM" in os.environ:
        return
    beside = os.path.join(os.path.dirname(sys.executable), "chunkmill")
    program = beside if os.access(beside, os.X_OK) else shutil.which("chunkmill")
    if program is None:
        raise _native.UsageError(
            "the processes and slurm executors start the `chunkmill` command, which is not on PATH"
        )
    os.environ["CHUNKMILL_PROGRAM"] = program


def run(
    argv: list[str],
    recipe: str | None,
    plan: dict[str, Any],
    executor: Any,
    retries: int,
    progress: bool | None,
) -> dict[str, Any]:
    """Runs the job of `argv` (whose plan is `plan`) on `executor`; returns its report."""
    if isinstance(executor, str) and executor in NATIVE:
        if executor != "threads":
            _program()
        bar = _Progress(progress, "chunkmill")
        try:
            text = _native.run_job(
                [*argv, "--executor", executor, "--no-progress"],
                recipe,
                lambda done, total, _bytes, _retries: bar.update(done, total),
            )
        finally:
            bar.close()
        report: dict[str, Any] = json.loads(text)
        return report
    submit = _engine(executor)
    prepared = json.loads(_native.run_job([*argv, "--prepare"], recipe))
    if prepared.get("nothing_new"):
        return prepared
    plan_url = plan["work_dir"].rstrip("/") + "/plan.json"
    bar = _Progress(progress, "chunkmill")
    total = sum(s["tasks"] for s in plan["stages"])
    done = ran = retried = 0
    try:
        for stage in plan["stages"]:
            slices = _slices(stage["tasks"], submit.parallelism)
            for result in submit(plan_url, stage["name"], slices, retries):
                done += result["tasks_run"] + result["tasks_skipped"]
                ran += result["tasks_run"]
                retried += result["retries"]
                bar.update(done, total)
    finally:
        bar.close()
    # Finishes the job: every task is marked done, so this runs none (or what the engine
    # left, on threads) and writes consolidated metadata, deletes intermediates, closes.
    resume = [*argv, "--resume"] if "--resume" not in argv else argv
    report = json.loads(_native.run_job(resume, recipe))
    report["tasks_run"] += ran
    report["tasks_skipped"] = done - ran
    report["retries"] += retried
    return report


def _slices(tasks: int, parallelism: int) -> list[tuple[int, int]]:
    """Contiguous task ranges, about four per worker so that the load evens out."""
    if tasks == 0:
        return []
    size = max(1, -(-tasks // max(1, 4 * parallelism)))
    return [(start, min(start + size, tasks)) for start in range(0, tasks, size)]


class _Engine:
    """Runs the slices of one stage and yields each slice's summary as it finishes; returns
    once every slice of the stage is done (the stage barrier)."""

    parallelism = 1

    def __call__(
        self, plan: str, stage: str, slices: list[tuple[int, int]], retries: int
    ) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


class _Dask(_Engine):
    def __init__(self, client: Any) -> None:
        self.client = client
        workers = client.scheduler_info().get("workers", {})
        self.parallelism = max(1, sum(w.get("nthreads", 1) for w in workers.values()))

    def __call__(self, plan: str, stage: str, slices: list[tuple[int, int]], retries: int) -> Any:
        from distributed import as_completed

        futures = [
            self.client.submit(run_slice, plan, stage, a, b, retries, pure=False, retries=retries,
                               key=f"chunkmill-{stage}-{a}-{b}-{os.urandom(4).hex()}")
            for a, b in slices
        ]
        try:
            for future in as_completed(futures):
                try:
                    yield future.result()
                except _native.ChunkmillError:
                    raise
                except Exception as e:
                    raise _native.JobError(f"stage {stage}: a dask task failed: {e}") from e
        except BaseException:
            self.client.cancel(futures)
            raise


class _Lithops(_Engine):
    def __init__(self, executor: Any, timeout: float) -> None:
        self.executor = executor
        self.timeout = timeout
        self.parallelism = max(1, os.cpu_count() or 1)

    def __call__(self, plan: str, stage: str, slices: list[tuple[int, int]], retries: int) -> Any:
        pending_slices = list(slices)
        # One more round for slices whose activations hung or came back without a result
        # (Lithops has been seen to hang on a retried task, and under load its localhost
        # backend has reported an activation done whose result was None): their done tasks
        # are marked, so running a slice again is safe.
        for _ in range(2):
            futures = self.executor.map(run_slice, [(plan, stage, a, b, retries) for a, b in pending_slices])
            try:
                self.executor.wait(futures, throw_except=False, timeout=self.timeout, show_progressbar=False)
            except TimeoutError:
                pass
            except Exception as e:
                raise _native.JobError(f"stage {stage}: lithops failed: {e}") from e
            again = []
            for slice_, future in zip(pending_slices, futures, strict=True):
                if not (future.success or future.done):
                    again.append(slice_)
                    continue
                if future.error:
                    raise _native.JobError(
                        f"stage {stage}: a lithops task failed: {future.result(throw_except=False)}"
                    )
                result = future.result(throw_except=False)
                if not isinstance(result, dict):
                    again.append(slice_)
                    continue
                yield result
            if not again:
                return
            pending_slices = again
        raise _native.JobError(
            f"stage {stage}: {len(pending_slices)} lithops task(s) not finished after two rounds of at most "
            f"{self.timeout:.0f} s; the others are marked done: rerun with resume=True"
        )


def check(executor: Any) -> None:
    """Refuses an executor that is none of those :func:`run` takes (before anything runs)."""
    if isinstance(executor, str) and executor in (*NATIVE, "dask", "lithops"):
        return
    module = type(executor).__module__
    if module.startswith(("distributed", "lithops")):
        return
    raise _native.UsageError(
        f"executor: one of {', '.join(NATIVE)}, 'dask' (or a dask.distributed.Client), "
        f"'lithops' (or a lithops.FunctionExecutor), not {executor!r}"
    )


def _engine(executor: Any) -> _Engine:
    name = type(executor).__name__
    module = type(executor).__module__
    if executor == "dask" or (name == "Client" and module.startswith("distributed")):
        if executor == "dask":
            try:
                from distributed import get_client
            except ImportError:
                raise _native.UsageError('executor="dask" needs distributed (pip install distributed)') from None
            try:
                executor = get_client()
            except ValueError:
                raise _native.UsageError(
                    'executor="dask" uses the current dask.distributed Client: start one, or pass it as executor='
                ) from None
        return _Dask(executor)
    if executor == "lithops" or module.startswith("lithops"):
        if executor == "lithops":
            try:
                import lithops
            except ImportError:
                raise _native.UsageError('executor="lithops" needs lithops (pip install lithops)') from None
            executor = lithops.FunctionExecutor()
        return _Lithops(executor, LITHOPS_TIMEOUT)
    raise _native.UsageError(
        f"executor: one of {', '.join(NATIVE)}, 'dask' (or a dask.distributed.Client), "
        f"'lithops' (or a lithops.FunctionExecutor), not {executor!r}"
    )


def lithops_localhost(**config: Any) -> Any:
    """A Lithops executor on this machine (its ``localhost`` backend, no cloud) that runs
    the functions with this interpreter, so that they find this package."""
    import lithops

    settings = {
        "lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"},
        "localhost": {"runtime": sys.executable},
    }
    for key, value in config.items():
        settings.setdefault(key, {}).update(value)
    return lithops.FunctionExecutor(config=settings)

