"""The what-if workspace (napari.yaml: ``napari_nacsim.plugin.workspace:WhatIfWorkspace``).

`widget.WhatIfWorkspace` is the dock widget.
"""

from ..viewing import WINDOW_SIZE
from .widget import GROUP, WhatIfWorkspace

__all__ = ["GROUP", "WINDOW_SIZE", "WhatIfWorkspace"]
