"""How a tumour size is written for a person: one rounding rule for every face.

The CLI, the workspace's size table and grid cells, the inspector, the reports and the text
of a DICOM Structured Report all write a size with `format_size`, so one size reads the
same everywhere. It lives in core (plain Python, no numbers computed) so that core's own
readers, such as the DICOM SR's, can use it; `science.measure` re-exports it beside the
sizes it computes.
"""

from __future__ import annotations

import math


def format_size(value: float, unit: str = "", *, scale: float | None = None,
                sign: bool = False) -> str:
    """A tumour size, or a number that goes with one (its SD, range or change), as every
    face prints it (the CLI, the size table, the grid cells, the reports): whole numbers
    when the size is 10 or more, two decimals below, so that a small tumour's mL keep their
    digits ("412 mm²", "3.27 mL"). ``scale``: the size that sets the digits (default:
    ``value`` itself), so that a size's SD or change is written like the size ("412 ± 3
    mm²"); ``sign``: "+" before a positive value (a change). "n/a" when not finite."""
    if not math.isfinite(value):
        return "n/a"
    decimals = 0 if abs(value if scale is None else scale) >= 10 else 2
    text = f"{'+' if sign and value > 0 else ''}{value:.{decimals}f}"
    return f"{text} {unit}" if unit else text
