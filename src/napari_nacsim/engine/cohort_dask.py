"""The Dask side of `engine.cohort_runner`: where the workers come from, the worker plugin
that loads the models once per worker, and the bounded submission loop.

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

import asyncio
import contextlib
import importlib.util
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

from ..core.errors import InputError
from .jobs import Cancelled, CancelToken

try:
    from distributed import Client, LocalCluster, WorkerPlugin, wait
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


class ModelPreload(WorkerPlugin):
    """Loads the run's models into each worker process when it starts (and into every worker
    that joins later, e.g. one restarted after a crash), so no task ships or loads a model.
    A failure is not raised here: the cases then fail with the same one-line reason."""

    def __init__(self, spec: Any):
        self.spec = spec

    def setup(self, worker) -> None:
        import torch

        torch.set_num_threads(1)
        try:
            self.spec.preload()
        except Exception as err:  # noqa: BLE001 - reported by the cases
            logging.getLogger(__name__).warning("nacsim: worker %s could not load the "
                                                "models: %s", worker.address, err)


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


def run_on_dask(client: Any, spec: Any, pending: Iterator[Any], out: str, state: Any,
                finished: Callable[[str, str], None], *, window: Optional[int] = None,
                cancel: Optional[CancelToken] = None,
                on_start: Optional[Callable[[Any], None]] = None,
                execute: Optional[Callable] = None) -> None:
    """Submit ``pending`` cases one task each, at most ``window`` in flight (default: twice
    the workers' threads, re-read as workers join), and report each as it finishes. A task
    that errors outside the case (e.g. its worker died too often: `KilledWorker`) is recorded
    as failed by the client, so that the run still ends with a record for every case."""
    from .cohort_runner import FAILED, _stamp, execute_case, one_line, write_failure

    execute = execute or execute_case
    plugin = f"nacsim-models-{uuid.uuid4().hex[:8]}"
    client.register_plugin(ModelPreload(spec), name=plugin)
    state.workers = len(client.scheduler_info().get("workers", {}))
    if on_start is not None:
        on_start(state)
    run_id = uuid.uuid4().hex[:8]
    inflight: dict[Any, Any] = {}
    cases = iter(pending)
    exhausted = False

    def limit() -> int:
        if window:
            return int(window)
        threads = sum(client.nthreads().values()) or 1
        return max(2, 2 * threads)

    def top_up() -> None:
        nonlocal exhausted
        while not exhausted and len(inflight) < limit():
            case = next(cases, None)
            if case is None:
                exhausted = True
                return
            future = client.submit(execute, spec, case, out, pure=False,
                                   key=f"nacsim-{case.id.replace('/', '-')}-{run_id}")
            inflight[future] = case

    try:
        top_up()
        while inflight:
            try:
                done, _ = wait(list(inflight), timeout=POLL_SECONDS,
                               return_when="FIRST_COMPLETED")
            except (TimeoutError, asyncio.TimeoutError):
                done = ()
            if cancel is not None and cancel.cancelled:
                raise Cancelled()
            for future in done:
                case = inflight.pop(future)
                try:
                    status = future.result()["status"]
                except Exception as err:  # noqa: BLE001 - recorded, the run goes on
                    write_failure(out, case, _stamp({"status": FAILED,
                                                     "reason": one_line(err), "rows": []},
                                                    case, time.perf_counter()))
                    status = FAILED
                future.release()
                state.workers = len(client.nthreads())
                finished(case.id, status)
            top_up()
    finally:
        if inflight:  # cancelled or interrupted: nothing more is started for this run
            client.cancel(list(inflight))
        with contextlib.suppress(Exception):  # a long-lived cluster keeps no stale plugin
            client.unregister_worker_plugin(plugin)
