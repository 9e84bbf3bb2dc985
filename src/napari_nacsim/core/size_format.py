"""How a tumour size is written for a person: one rounding rule for every face.

The CLI, the workspace's size table and grid cells, the inspector, the reports and the text
of a DICOM Structured Report all write a size with `format_size`, its longest diameter with
`format_diameter` and a change from baseline in percent with `format_change_percent`, so
one number reads the same everywhere. It lives in core (plain Python, no numbers computed)
so that core's own readers, such as the DICOM SR's, can use it; `science.measure`
re-exports it beside the sizes it computes.
"""

from __future__ import annotations

import math

# The long axis to 0.1 mm (RECIST's measure; a whole mm hides the change of a small tumour)
DIAMETER_DECIMALS = 1
# A change to 0.1 %, so that a value beside RECIST's -30 % / +20 % reads on its side of it
PERCENT_DECIMALS = 1


def format_size(value: float, unit: str = "", *, scale: float | None = None,
                sign: bool = False) -> str:
    """A tumour size, or a number that goes with one (its SD, range or change), as every
    face prints it (the CLI, the size table, the grid cells, the reports): whole numbers
    when the size is 10 or more, two decimals below, so that a small tumour's mL keep their
    digits ("412 mm²", "3.27 mL"). ``scale``: the size that sets the digits (default:
    ``value`` itself), so that a size's SD or change is written like the size ("412 ± 3
    mm²"); ``sign``: "+" before a positive value (a change). "n/a" when not finite."""
    decimals = 0 if abs(value if scale is None else scale) >= 10 else 2
    return _fixed(value, decimals, unit, sign)


def format_diameter(value: float, unit: str = "mm", *, sign: bool = False) -> str:
    """A longest diameter, or its SD or change, in mm to 0.1 mm ("31.2 mm", "+1.4 mm";
    ``unit=""``: the number alone, for "29.0 ± 2.1 mm"). "n/a" when not finite."""
    return _fixed(value, DIAMETER_DECIMALS, unit, sign)


def format_change_percent(value: float, unit: str = "%", *, sign: bool = True) -> str:
    """A change from baseline in percent, of a size or of the long axis, to 0.1 % with its
    sign ("-26.4 %", "+3.0 %"); ``sign=False`` for its SD or a reduction. "n/a" when not
    finite."""
    return _fixed(value, PERCENT_DECIMALS, unit, sign)


def _fixed(value: float, decimals: int, unit: str, sign: bool) -> str:
    if not math.isfinite(value):
        return "n/a"
    text = f"{value:.{decimals}f}"
    if float(text) == 0:
        text = f"{0.0:.{decimals}f}"   # no "-0.0": a change that rounds to none has no sign
    elif sign and value > 0:
        text = f"+{text}"
    return f"{text} {unit}" if unit else text
