"""Write a what-if run to a folder and draw it.

`write_result` writes, atomically (a staging folder renamed into place), the model-grid
baseline and its mask, every generated follow-up (the image — the mean when several samples
were drawn — its tumour mask, and with samples the per-pixel SD map and each sample), each as
NIfTI plus its provenance sidecar, then ``report.json`` (sizes and deltas per scenario) and
``comparison.png`` (`comparison_figure`). Every generated file is labelled synthetic in its
sidecar; the figure says so in its title.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..core.atomic import atomic_directory, atomic_path, write_json_atomic
from ..core.errors import InputError
from ..core.scan_io import write_scan
from ..science.measure import format_change_percent
from .session import WhatIfResult


def slug(text: str) -> str:
    """``"non-pCR"`` -> ``"non-pCR"``, ``"HR+ HER2−"`` -> ``"HRpos_HER2neg"`` (file-name safe)."""
    text = text.replace("+", "pos").replace("−", "neg").replace("-", "-")
    text = re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")
    return text or "scenario"


def write_result(result: WhatIfResult, out: str | Path, *, overwrite: bool = False,
                 extra_report: Optional[dict[str, Any]] = None,
                 figure: bool = True) -> dict[str, Any]:
    """Write ``result`` into the folder ``out``; returns the report (also ``report.json``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(out, "is not empty (choose another folder or allow overwriting)")
    report = result.to_report()
    if extra_report:
        report.update(extra_report)
    files: dict[str, str] = {}
    with atomic_directory(out) as staging:
        base = result.schema.baseline
        # Each sidecar says what its file is: the input, or a generated follow-up with its
        # own time point and scenario (not the input's).
        inp = {"role": "input", "timepoint": base}
        files["baseline"] = _write(result.baseline, staging / f"{base}_baseline.nii.gz", inp)
        files["baseline_mask"] = _write(result.baseline_mask,
                                        staging / f"{base}_baseline_tumour.nii.gz",
                                        {**inp, "role": "input tumour mask"})
        for arm, entry in zip(result.arms, report["scenarios"]):
            for tp, follow in arm.followups.items():
                stem = f"{tp}_{slug(arm.label)}"
                gen = {"role": "generated follow-up", "timepoint": tp, "scenario": arm.label,
                       "scenario_values": follow.scenario}
                written = {"image": _write(follow.image, staging / f"{stem}.nii.gz", gen),
                           "mask": _write(follow.mask, staging / f"{stem}_tumour.nii.gz",
                                          {**gen, "role": "tumour mask of a generated "
                                                          "follow-up"})}
                if follow.spread is not None:
                    written["sd_map"] = _write(follow.spread, staging / f"{stem}_sd.nii.gz",
                                               {**gen, "role": "per-pixel SD of generated "
                                                               "samples"})
                    written["samples"] = [
                        _write(s, staging / f"{stem}_sample{k + 1}.nii.gz",
                               {**gen, "sample": k + 1})
                        for k, s in enumerate(follow.samples)]
                entry["followups"][tp]["files"] = written
        report["files"] = files
        if figure:
            comparison_figure(result, staging / "comparison.png")
            report["files"]["comparison"] = "comparison.png"
        write_json_atomic(staging / "report.json", report)
    return report


def _write(scan, path: Path, what: Optional[dict[str, Any]] = None) -> str:
    write_scan(scan, path, extra=what)
    return path.name


# --- the figure ---------------------------------------------------------------------------

def comparison_figure(result: WhatIfResult, path: str | Path, *, dpi: int = 110) -> Path:
    """One row per scenario: the baseline, then every follow-up, tumour contours in red, the
    size and delta in each title; the size table underneath. Written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, safe off the UI thread

    family = result.family
    times = family.followup_times
    base = result.schema.baseline
    # 3D results: every panel shows the slice where the baseline tumour is largest
    plane = family.display_slice(result.baseline_mask)
    rows, cols = len(result.arms), 1 + len(times)
    fig = Figure(figsize=(3.0 * cols, 3.1 * rows + 0.5 + 0.28 * (1 + rows * len(times))),
                 dpi=dpi)
    table_h = 0.28 * (2 + rows * len(times))
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[3.0] * rows + [table_h])
    for r, arm in enumerate(result.arms):
        predicted = arm.describe_predictions()
        panels = [(f"{base} input (measured)\n"
                   f"{result.baseline_size.describe()}", result.baseline, result.baseline_mask)]
        for tp in times:
            follow = arm.followups[tp]
            change = follow.change
            pct = (f", {format_change_percent(change.percent)}" if np.isfinite(change.percent)
                   else "")
            panels.append((f"{tp} · {arm.label} (synthetic)\n{follow.describe_size()}{pct}"
                           + (f"\n{predicted}" if predicted else ""),
                           follow.image, follow.mask))
        for c, (title, image, mask) in enumerate(panels):
            ax = fig.add_subplot(grid[r, c])
            _draw(ax, family, image, mask, plane)
            ax.set_title(title, fontsize=8)
    ax = fig.add_subplot(grid[rows, :])
    ax.axis("off")
    body = [[row["scenario"].replace(" (synthetic)", " *"), row["size"], row["delta"],
             row["delta_percent"]] for row in result.table_rows()]
    labels, widths = ["scenario", "tumour size", "Δ vs baseline", "Δ %"], [0.46, 0.26, 0.16, 0.1]
    if result.has_predictions:
        for line, row in zip(body, result.table_rows()):
            line.append(row["predictions"])
        labels, widths = labels + ["predicted"], [0.34, 0.22, 0.13, 0.08, 0.23]
    table = ax.table(cellText=body, colLabels=labels, loc="upper center", cellLoc="left",
                     colLoc="left", colWidths=widths)
    table.auto_set_font_size(False)
    table.set_fontsize(7.5)
    request = result.request
    heading = ("SYNTHETIC counterfactual follow-ups (* generated, not measured) — "
               f"model {result.model['model_hash'][:12]}, seed {request.seed}, "
               f"{request.samples} sample(s); tumour contour in red (nnU-Net)")
    # wrapped to the figure's width (a two-column figure would cut it at both sides): about
    # 14 characters of 8.5 pt text per inch; each line takes about 0.16 inch at the top
    width_in, height_in = fig.get_size_inches()
    lines = textwrap.wrap(heading, width=int(width_in * 14))
    fig.suptitle("\n".join(lines), fontsize=8.5)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.16 * len(lines) + 0.05) / height_in))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _draw(ax, family, image, mask, plane) -> None:
    """One panel: the image (the family's plane of a volume) in its display window, the
    tumour contour, a 5 cm scale bar and the orientation letters."""
    array, (sy, sx) = family.figure_plane(image, plane)
    h, w = array.shape
    extent = (0, w * sx, h * sy, 0)
    lo, hi = family.model_input.display_range
    ax.imshow(np.clip(array, lo, hi), cmap="gray", vmin=lo, vmax=hi, extent=extent,
              interpolation="nearest")
    outline, (my, mx) = family.figure_plane(mask, plane)
    if np.any(outline):
        mh, mw = outline.shape
        ax.contour(outline > 0, levels=[0.5], colors="red", linewidths=1.0,
                   extent=(0, mw * mx, 0, mh * my), origin="upper")
    ax.plot([8, 58], [extent[2] - 8] * 2, color="white", linewidth=2)  # 5 cm scale bar
    ax.text(33, extent[2] - 12, "5 cm", color="white", fontsize=6, ha="center")
    _, _, left, right = family.orientation
    for text, x, y, ha, va in ((left, 0.03, 0.5, "left", "center"),
                               (right, 0.97, 0.5, "right", "center")):
        ax.text(x, y, text, color="yellow", transform=ax.transAxes, fontsize=7, va=va, ha=ha)
    ax.set_xticks([])
    ax.set_yticks([])
