"""The Dask side of `engine.cohort_runner`: where the workers come from, the worker plugin
that carries the run's spec to each worker once and loads the models there, and the bounded
submission loop.

Needs the ``cluster`` extra (``pip install 'nacsim[cluster]'``: distributed, dask-jobqueue).

- **embedded** (the default): a `distributed.LocalCluster` of worker *processes* with one
  thread each (one torch thread: see `cohort_runner.one_torch_thread`), sized to the machine
  (`machine_workers`), listening on the loopback interface only, closed with the run;
- **an existing scheduler**: ``tcp://host:8786`` (or ``tls://``, with Dask's ``Security``
  from the Dask configuration), or a scheduler file written by ``dask scheduler
  --scheduler-file``;
- **a batch system**: ``slurm``, ``pbs``, ``sge`` or ``lsf`` through dask-jobqueue; the
  scheduler runs here, the workers in jobs (options: `CLUSTER_OPTIONS`; anything not given
  comes from the Dask configuration, e.g. ``~/.config/dask/jobqueue.yaml``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import logging
import math
import os
import queue
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

from ..core.errors import InputError
from .jobs import Cancelled, CancelToken

try:
    from distributed import Client, LocalCluster, WorkerPlugin, get_worker
except ImportError as err:  # pragma: no cover - the message is what a user sees
    raise InputError("distributed", "is not installed: install the cluster extra "
                                    "(pip install 'nacsim[cluster]') or run with --workers 0"
                     ) from err

CLUSTERS = ("slurm", "pbs", "sge", "lsf")
# dask-jobqueue options a lab sets (None: from the Dask configuration or jobqueue's default)
CLUSTER_OPTIONS = ("queue", "account", "cores", "memory", "walltime", "jobs", "interface",
                   "job_extra_directives", "job_script_prologue", "local_directory",
                   "log_directory")
WORKER_MEMORY = 2 << 30  # bytes one worker needs (torch, the generator and the segmenter)
POLL_SECONDS = 0.5       # how often a cancelled run is noticed while tasks run
THREADS_SECONDS = 2.0    # how often the workers' thread count is re-read (the window's size)
MIN_WINDOW = 64          # tasks in flight at least, by default (`default_window`)


def machine_workers() -> int:
    """Worker processes for this machine: one per usable core, fewer where memory would not
    hold ``WORKER_MEMORY`` each."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:
        import psutil

        by_memory = int(psutil.virtual_memory().total // WORKER_MEMORY)
    except ImportError:  # pragma: no cover
        by_memory = cores
    return max(1, min(cores, by_memory))


class RunOnWorker(WorkerPlugin):
    """A run's spec and case function on each worker, shipped once per worker (and to every
    worker that joins later, e.g. one restarted after a crash) rather than with every task: a
    task carries only its case. Loads the run's models when the worker starts, so no task
    ships or loads a model. A failure to load is not raised here: the cases then fail with
    the same one-line reason."""

    def __init__(self, spec: Any, execute: Callable):
        self.spec, self.execute = spec, execute

    def setup(self, worker) -> None:
        import torch

        torch.set_num_threads(1)
        try:
            self.spec.preload()
        except Exception as err:  # noqa: BLE001 - reported by the cases
            logging.getLogger(__name__).warning("nacsim: worker %s could not load the "
                                                "models: %s", worker.address, err)


class CaseFailed(Exception):
    """A case that failed, already recorded as failed by the worker: its task errs, so that
    the client learns a case's outcome from the task's state without fetching a result."""


def run_case_on_worker(plugin: str, case: Any, out: str) -> None:
    """The task of one case: run it with the spec that the run's plugin left on this worker.
    Finishes for a case done or skipped, raises `CaseFailed` for one recorded as failed."""
    from .cohort_runner import FAILED

    try:
        run = get_worker().plugins[plugin]
    except KeyError:  # pragma: no cover - the scheduler sets plugins up before any task
        raise RuntimeError(f"worker has no {plugin} (joined without the run's plugin)"
                           ) from None
    result = run.execute(run.spec, case, out)
    if result["status"] == FAILED:
        raise CaseFailed(result.get("reason", ""))


@contextlib.contextmanager
def connect(*, client: Any = None, workers: Optional[int] = None,
            scheduler: Optional[str] = None, cluster: Optional[str] = None,
            cluster_options: Optional[Mapping[str, Any]] = None
            ) -> Iterator[tuple[Any, str]]:
    """Yield (a connected `Client`, the dashboard address or "")."""
    if client is not None:
        yield client, _dashboard(client)
        return
    if scheduler is not None:
        with _client_for(scheduler) as connected:
            yield connected, _dashboard(connected)
        return
    if cluster is not None:
        with _jobqueue(cluster, dict(cluster_options or {})) as connected:
            yield connected, _dashboard(connected)
        return
    n = int(workers) if workers else machine_workers()
    if n < 1:
        raise InputError("--workers", f"{workers} must be at least 1 (0: in this process)")
    memory = max(WORKER_MEMORY, _total_memory() // n)
    dashboard = "127.0.0.1:0" if importlib.util.find_spec("bokeh") else None
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                      scheduler_port=0, dashboard_address=dashboard, memory_limit=memory,
                      silence_logs=logging.ERROR) as local, Client(local) as connected:
        yield connected, _dashboard(connected)


def _client_for(scheduler: str):
    if Path(scheduler).is_file():
        return Client(scheduler_file=scheduler, timeout="30s")
    if "://" not in scheduler and ":" not in scheduler:
        raise InputError("--scheduler", f"{scheduler!r} is neither a scheduler address "
                                        "(tcp://host:8786) nor a scheduler file")
    try:
        return Client(scheduler, timeout="30s")
    except OSError as err:
        raise InputError("--scheduler", f"cannot reach {scheduler} ({err})") from None


@contextlib.contextmanager
def _jobqueue(kind: str, options: dict[str, Any]) -> Iterator[Any]:
    if kind not in CLUSTERS:
        raise InputError("--cluster", f"{kind!r} is not one of {', '.join(CLUSTERS)}")
    import dask_jobqueue

    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster,
           "sge": dask_jobqueue.SGECluster, "lsf": dask_jobqueue.LSFCluster}[kind]
    unknown = sorted(set(options) - set(CLUSTER_OPTIONS))
    if unknown:
        raise InputError("--cluster", f"unknown option {unknown[0]!r} (known: "
                                      f"{', '.join(CLUSTER_OPTIONS)})")
    jobs = int(options.pop("jobs", None) or 1)
    kwargs = {k: v for k, v in options.items() if v not in (None, [], ())}
    if kind == "pbs" and "account" in kwargs:  # PBS calls it project
        kwargs["project"] = kwargs.pop("account")
    if "cores" in kwargs:  # one single-threaded worker process per core
        kwargs["processes"] = int(kwargs["cores"])
    with cls(**kwargs) as batch:
        batch.scale(jobs=jobs)
        with Client(batch) as connected:
            yield connected


def _dashboard(client: Any) -> str:
    try:
        return client.dashboard_link if importlib.util.find_spec("bokeh") else ""
    except Exception:  # noqa: BLE001 - no dashboard is not an error
        return ""


def _total_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:  # pragma: no cover
        return WORKER_MEMORY


def default_window(threads: int) -> int:
    """Tasks in flight at most by default: twice the workers' threads (each worker has its
    next case queued while it runs one), and at least ``MIN_WINDOW``, so that short cases
    (skipped, failing on bad input, a dry run) do not leave the workers waiting for the
    client's round trip; the tasks beyond the workers' wait in the scheduler's queue (a few
    kB each)."""
    return max(MIN_WINDOW, 2 * int(threads))


class _Threads:
    """The cluster's worker threads, re-read from the scheduler at most every
    ``THREADS_SECONDS`` (a round trip: not once per task), so that workers that join or
    leave change the window within seconds."""

    def __init__(self, client: Any):
        self.client, self.read_at, self.workers, self.threads = client, -math.inf, 0, 0

    def refresh(self) -> None:
        if time.monotonic() - self.read_at >= THREADS_SECONDS:
            nthreads = self.client.nthreads()
            self.workers, self.threads = len(nthreads), sum(nthreads.values())
            self.read_at = time.monotonic()


def run_on_dask(client: Any, spec: Any, pending: Iterator[Any], out: str, state: Any,
                finished: Callable[[str, str], None], *, window: Optional[int] = None,
                cancel: Optional[CancelToken] = None,
                on_start: Optional[Callable[[Any], None]] = None,
                execute: Optional[Callable] = None) -> None:
    """Submit ``pending`` cases one task each, at most ``window`` in flight (default:
    `default_window` of the workers' threads, re-read as workers join), and report each as
    it finishes. A task that errors outside the case (e.g. its worker died too often:
    `KilledWorker`) is recorded as failed by the client, so that the run still ends with a
    record for every case.

    Per finished case the client makes no round trip of its own: the spec goes to the
    workers once (`RunOnWorker`), cases are submitted in batches (one graph update whenever a
    quarter of the window is free), finished tasks are announced by a done-callback into a
    queue (no `wait` over every future in flight), and a case's outcome is its task's state
    (a failed case errs: `CaseFailed`), so no result is fetched."""
    from .cohort_runner import DONE, FAILED, _stamp, execute_case, one_line, write_failure

    run_id = uuid.uuid4().hex[:8]
    plugin = f"nacsim-spec-{run_id}"   # never a task key (those are nacsim-case-...)
    client.register_plugin(RunOnWorker(spec, execute or execute_case), name=plugin)
    threads = _Threads(client)
    threads.refresh()
    state.workers = threads.workers
    if on_start is not None:
        on_start(state)
    announced: queue.SimpleQueue = queue.SimpleQueue()   # futures done, from Dask's thread
    inflight: dict[str, tuple[Any, Any]] = {}            # task key -> (future, case)
    cases = iter(pending)
    exhausted = False

    def top_up() -> None:
        nonlocal exhausted
        threads.refresh()
        limit = int(window) if window else default_window(threads.threads)
        room = limit - len(inflight)
        # a quarter of the window at a time (one graph update each), not a case at a time
        if exhausted or room <= 0 or (inflight and room < max(1, limit // 4)):
            return
        batch = list(itertools.islice(cases, room))
        exhausted = len(batch) < room
        if not batch:
            return
        # the run's id before the case's: Dask groups tasks by the key's leading words, so
        # every case is of one group ("nacsim-case"), whatever its id
        keys = [f"nacsim-case-{run_id}-{case.id.replace('/', '-')}" for case in batch]
        futures = client.map(run_case_on_worker, [plugin] * len(batch), batch,
                             [out] * len(batch), key=keys, pure=False)
        for future, case in zip(futures, batch):
            inflight[future.key] = (future, case)
            future.add_done_callback(announced.put)

    def outcome(future: Any, case: Any) -> str:
        """A task announced done: finished (since: maybe its worker died, which does not
        matter, the case's folder is written) or erred."""
        if future.status not in ("error", "cancelled"):
            return DONE
        try:
            future.result()
        except CaseFailed:
            pass  # recorded by the worker
        except Exception as err:  # noqa: BLE001 - outside the case: recorded here
            write_failure(out, case, _stamp({"status": FAILED, "reason": one_line(err),
                                             "rows": []}, case, time.perf_counter()))
        return FAILED

    try:
        top_up()
        while inflight:
            try:
                done = [announced.get(timeout=POLL_SECONDS)]
            except queue.Empty:
                done = []
            with contextlib.suppress(queue.Empty):
                while True:
                    done.append(announced.get_nowait())
            if cancel is not None and cancel.cancelled:
                raise Cancelled()
            state.workers = threads.workers
            for future in done:
                if future.key not in inflight:
                    continue
                _, case = inflight.pop(future.key)
                status = outcome(future, case)
                future.release()
                finished(case.id, status)
            top_up()
    finally:
        if inflight:  # cancelled or interrupted: nothing more is started for this run
            client.cancel([future for future, _ in inflight.values()])
        with contextlib.suppress(Exception):  # a long-lived cluster keeps no stale plugin
            client.unregister_worker_plugin(plugin)
