"""Responsiveness of the napari what-if workspace while it generates (a real window).

    xvfb-run -a python benchmarks/ui_responsiveness.py --out docs/benchmarks/ui_responsiveness.json
    xvfb-run -a python benchmarks/ui_responsiveness.py --sample lung --out docs/benchmarks/ui_responsiveness_lung.json

Opens napari with a sample patient (``--sample``: one of the plugin's samples) and the
workspace — which generates the family's default comparison by itself (``first_result_s``:
from opening the widget to the first comparison on screen, model loading included, and for
a sample of whole scans the making of the model input) — then measures, on the UI thread,
the longest gap between ticks of a 5 ms timer (a stall the user would feel):

- ``during_runs``: from a change that needs a new run until its result starts to be drawn,
  while the worker generates and segments (``--runs`` changes, each a new seed so that
  nothing is remembered, whatever the family's variables);
- ``showing_result``: the UI-thread time to put a result on screen (layers, table, plot);
- ``toggling``: 100 scenario toggles in a burst (each submitting a run, superseding the one
  before) until the last result is shown; also how many results were shown (should be 1).

Also the latency of a scenario change (submit -> result shown) with the model loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--steps", type=int, default=None, help="sampler steps (model default)")
    p.add_argument("--sample", default="breast", help="the nacsim sample to open (breast, lung)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    import napari
    from qtpy.QtCore import QElapsedTimer, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_nacsim.plugin.workspace import WhatIfWorkspace

    viewer = napari.Viewer(show=True)
    viewer.open_sample("nacsim", args.sample)
    app = QApplication.instance()

    clock = QElapsedTimer()
    clock.start()
    ticks: list[int] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(clock.elapsed()))
    timer.start(5)

    # The first run: no click (the model loads in the worker, then the comparison).
    opened = time.perf_counter()
    widget = WhatIfWorkspace(viewer)
    viewer.window.add_dock_widget(widget, area="right")

    def wait_for(predicate, timeout_s=600.0):
        end = time.monotonic() + timeout_s
        while not predicate():
            app.processEvents()
            time.sleep(0.001)
            if time.monotonic() > end:
                raise TimeoutError("run did not finish")

    def max_gap(since: int, until: float = float("inf")) -> float:
        window = [t for t in ticks if since <= t <= until]
        return max((b - a for a, b in zip(window, window[1:])), default=0.0)

    wait_for(lambda: widget.results_shown == 1 and not widget.runner.running)
    first_result_s = time.perf_counter() - opened
    first_gap = max_gap(0)
    widget.auto_run.setChecked(False)
    if args.steps:
        widget.advanced.setChecked(True)
        widget.steps.setValue(args.steps)

    # Time to show a result on the UI thread, measured directly.
    show_ms = []
    for _ in range(3):
        t = time.perf_counter()
        widget._show_result(widget.result)
        show_ms.append(1000 * (time.perf_counter() - t))

    # Scenario changes that need a new run (a new seed each time: nothing remembered).
    shown_at: list[int] = []
    show = widget._show_result
    widget._show_result = lambda result: (shown_at.append(clock.elapsed()), show(result))
    widget.advanced.setChecked(True)
    if args.steps:
        widget.steps.setValue(args.steps)
    latencies, run_gaps = [], []
    for k in range(args.runs):
        widget.seed.setValue(1000 + k)
        before = widget.results_shown
        started = clock.elapsed()
        t = time.perf_counter()
        widget.run()
        wait_for(lambda: widget.results_shown > before)
        latencies.append(time.perf_counter() - t)
        run_gaps.append(max_gap(started, shown_at[-1]))
    before = widget.results_shown
    since = clock.elapsed()
    for k in range(100):
        widget.seed.setValue(2000 + k % 2)
        widget.run()
        app.processEvents()
    wait_for(lambda: widget.results_shown > before and not widget.runner.running)
    toggling_gap = max_gap(since)
    timer.stop()
    widget.shutdown()

    import torch

    result = {
        "command": "xvfb-run -a python benchmarks/ui_responsiveness.py" + (
            f" --steps {args.steps}" if args.steps else "") + f" --runs {args.runs}" +
            f" --sample {args.sample}",
        "family": widget.result.family.name,
        "machine": {"platform": platform.platform(), "cpu_cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "display": "Xvfb (software OpenGL)"},
        "first_result_s": round(first_result_s, 2),
        "ui_max_stall_during_first_run_ms": round(first_gap, 1),
        "steps": widget.result.request.steps,
        "sampler": widget.result.request.sampler,
        "scenario_change_to_result_s": {"median": round(statistics.median(latencies), 3),
                                        "max": round(max(latencies), 3)},
        "ui_max_stall_during_runs_ms": round(max(run_gaps), 1),
        "ui_stall_per_run_ms": [round(g, 1) for g in run_gaps],
        "ui_time_to_show_result_ms": {"median": round(statistics.median(show_ms), 1),
                                      "max": round(max(show_ms), 1)},
        "toggling_100_in_a_burst": {"max_stall_ms": round(toggling_gap, 1),
                                    "results_shown": widget.results_shown - before},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
