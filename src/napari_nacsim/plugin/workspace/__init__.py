"""The what-if workspace (napari.yaml: ``napari_nacsim.plugin.workspace:WhatIfWorkspace``).

`widget.WhatIfWorkspace`, the dock widget, wires together collaborators that are each given
the controls and state they work on and never call back into it (as napari-animation's
widgets are given the animation they show):

- `controls`: the form, built into the dock; its widgets are the workspace's attributes;
- `model_list`: one `ModelEntry` per model (folder, family, card defaults, input grid, the
  loaded session) and the Model combo listing them;
- `comparison`: the family's scenario panel, what is compared, the `WhatIfRequest`;
- `input_finder`: which layer is the input, whether it fits the model, the header;
- `patient_input`: jobs making the model input from a cohort patient or the open scans;
- `window_presets`: the Window combo over the cells' linked window;
- `result_view`: a result as grid cells (`plugin.cells`, shared with the inspector);
- `docks`: the size table and plot, docked once; `saving`: the results folder.
"""

from ..viewing import WINDOW_SIZE
from .widget import GROUP, WhatIfWorkspace

__all__ = ["GROUP", "WINDOW_SIZE", "WhatIfWorkspace"]
