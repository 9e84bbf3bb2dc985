"""One job per patient, run in worker processes, with progress: the pool every data
preparation of this floor uses (paired cohorts, segmentation cases, phantom cohorts).

Workers are spawned, not forked: ANTs/ITK and torch are not fork-safe once initialised.
A spawned worker imports nacsim afresh, so it knows the built-in families only; jobs are
handed a family's name, never the object.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

# A laptop or CI machine: more workers than this only compete for its cores and memory.
DEFAULT_JOBS = 2


def worker_count(jobs: int | None, n_tasks: int) -> int:
    """How many processes run ``n_tasks`` jobs: ``jobs`` if given, else up to
    `DEFAULT_JOBS` (never more than the machine's cores), and never more than the tasks."""
    wanted = jobs or min(DEFAULT_JOBS, os.cpu_count() or 1)
    return max(1, min(wanted, n_tasks))


def map_jobs(job: Callable[..., Any], arguments: Sequence[tuple], jobs: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """``[job(*args) for args in arguments]``, in order, in `worker_count` processes (in
    this process when that is 1). ``progress(done, total)`` is called after each result,
    in order. A failing job raises here, and the jobs not yet started are dropped."""
    total = len(arguments)
    results: list[Any] = []
    if worker_count(jobs, total) == 1:
        for done, args in enumerate(arguments, start=1):
            results.append(job(*args))
            if progress:
                progress(done, total)
        return results
    with ProcessPoolExecutor(worker_count(jobs, total),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(job, *args) for args in arguments]
        try:
            for done, future in enumerate(futures, start=1):
                results.append(future.result())
                if progress:
                    progress(done, total)
        except BaseException:
            # An error or an interrupt: do not wait for the rest of the cohort.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results
