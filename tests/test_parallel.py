"""The one process pool of the data floor: results in order, progress in order, failures
reach the caller, and the worker count it picks."""

from __future__ import annotations

import math
import operator

import pytest

from napari_nacsim.datasets.parallel import DEFAULT_JOBS, map_jobs, worker_count


def test_worker_count():
    assert worker_count(3, 10) == 3
    assert worker_count(8, 2) == 2      # never more workers than tasks
    assert worker_count(1, 5) == 1
    assert worker_count(4, 0) == 1
    assert 1 <= worker_count(None, 10) <= DEFAULT_JOBS


@pytest.mark.parametrize("jobs", [1, 2])
def test_results_and_progress_in_order(jobs):
    seen = []
    # The later tasks are the cheaper ones: results must still come back in task order.
    arguments = [(10 ** (6 - k), 2) for k in range(5)]
    results = map_jobs(operator.pow, arguments, jobs, lambda done, total: seen.append((done, total)))
    assert results == [a ** b for a, b in arguments]
    assert seen == [(k, 5) for k in range(1, 6)]


def test_a_failing_job_raises_in_the_caller():
    with pytest.raises(ValueError, match="math domain error"):
        map_jobs(math.sqrt, [(4.0,), (-1.0,), (9.0,)], jobs=2)
