"""Where `nacsim review` and `nacsim batch` run their cases (`engine.cohort_runner`): the
shared options (--workers, --scheduler, --cluster and its job options, --resume) and the
progress bar."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, Optional

from ..core.errors import InputError


def add_run_arguments(p) -> None:
    g = p.add_argument_group("where the cases run (docs/cohort-scale.md)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes of an embedded Dask cluster on this machine "
                        "(loopback only; default: one per core, as memory allows); 0: in "
                        "this process, one case after another")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="an existing Dask scheduler: tcp://host:8786 (tls:// with the Dask "
                        "configuration's certificates) or a scheduler file")
    g.add_argument("--cluster", choices=["slurm", "pbs", "sge", "lsf"], default=None,
                   help="start the workers as batch jobs (dask-jobqueue); job options below "
                        "or from the Dask configuration (jobqueue.yaml)")
    g.add_argument("--queue", default=None, help="--cluster: queue / partition")
    g.add_argument("--account", default=None, help="--cluster: account (PBS: project)")
    g.add_argument("--cores", type=int, default=None,
                   help="--cluster: cores per job (one single-threaded worker per core)")
    g.add_argument("--memory", default=None, help="--cluster: memory per job, e.g. 16GB")
    g.add_argument("--walltime", default=None, help="--cluster: walltime per job, e.g. 04:00:00")
    g.add_argument("--jobs", type=int, default=None, help="--cluster: number of jobs (default 1)")
    g.add_argument("--interface", default=None,
                   help="--cluster: network interface the scheduler and workers use, e.g. ib0")
    g.add_argument("--job-extra", action="append", default=None, metavar="DIRECTIVE",
                   help="--cluster: an extra job directive, e.g. '--gres=gpu:1' (repeat)")
    g.add_argument("--job-prologue", action="append", default=None, metavar="COMMAND",
                   help="--cluster: a command run before each worker starts, e.g. 'source "
                        "/path/to/.venv/bin/activate' (repeat)")
    g.add_argument("--resume", action="store_true",
                   help="finish an interrupted run: only cases without a record of this very "
                        "request are run")
    g.add_argument("--retry-failed", action="store_true",
                   help="with --resume: run the cases recorded as failed again too")
    g.add_argument("--window", type=int, default=None, metavar="N",
                   help="tasks in flight at most (default: twice the worker threads, at least 64)")


def run_options(args, runnable: int) -> dict[str, Any]:
    """Keyword arguments of `run_cases` from the command line. Without --workers,
    --scheduler or --cluster a run of one case, or one without the `distributed` package,
    stays in this process (said once)."""
    chosen = args.workers is not None or args.scheduler or args.cluster
    if sum(bool(x) for x in (args.workers is not None, args.scheduler, args.cluster)) > 1:
        raise InputError("--workers/--scheduler/--cluster", "choose one")
    if args.retry_failed and not args.resume:
        raise InputError("--retry-failed", "goes with --resume")
    jobqueue = {"queue": args.queue, "account": args.account, "cores": args.cores,
                "memory": args.memory, "walltime": args.walltime, "jobs": args.jobs,
                "interface": args.interface, "job_extra_directives": args.job_extra,
                "job_script_prologue": args.job_prologue}
    flags = {"job_extra_directives": "--job-extra", "job_script_prologue": "--job-prologue"}
    if not args.cluster and any(v is not None for v in jobqueue.values()):
        name = next(k for k, v in jobqueue.items() if v is not None)
        raise InputError(flags.get(name, f"--{name}"), "is a job option: it goes with --cluster")
    workers = args.workers
    if not chosen:
        if runnable <= 1:
            workers = 0
        elif importlib.util.find_spec("distributed") is None:
            print("nacsim: the cluster extra is not installed (pip install 'nacsim[cluster]'): "
                  "running the cases in this process", file=sys.stderr)
            workers = 0
    if workers is not None and workers < 0:
        raise InputError("--workers", f"{workers} must be 0 or more")
    return {"workers": workers, "scheduler": args.scheduler, "cluster": args.cluster,
            "cluster_options": {k: v for k, v in jobqueue.items() if v is not None}
            if args.cluster else None, "resume": args.resume,
            "retry_failed": args.retry_failed, "window": args.window}


class ProgressBar:
    """A tqdm bar of cases: done / failed / remaining and the rate; the Dask dashboard's
    address is printed once when one runs."""

    def __init__(self, total: int, desc: str, quiet: bool = False):
        self.total, self.desc, self.quiet = total, desc, quiet
        self.bar: Optional[Any] = None

    def start(self, state) -> None:
        if state.dashboard:
            print(f"Dask dashboard: {state.dashboard}", file=sys.stderr)
        if self.quiet:
            return
        from tqdm import tqdm

        where = state.where if state.where != "on Dask" else f"{state.workers} Dask workers"
        self.bar = tqdm(total=self.total, desc=f"{self.desc} ({where})", unit="case",
                        file=sys.stderr, initial=0, dynamic_ncols=True)
        self.update(state)

    def update(self, state) -> None:
        if self.bar is None:
            return
        self.bar.n = state.done + state.failed + state.reused
        self.bar.set_postfix_str(f"done {state.done + state.reused} · failed {state.failed} · "
                                 f"left {state.remaining}", refresh=False)
        self.bar.update(0)  # redraws at most every mininterval (a 100k resume: not 100k times)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
