"""The viewer a dock widget works with, as napari really hands it over.

Opened from the Plugins menu, by ``napari -w nacsim`` or by
``viewer.window.add_plugin_dock_widget`` (the demo), a widget does not get the viewer: it gets
napari's ``PublicOnlyProxy`` of it. Everything reached through a proxy is itself a *new*
proxy on every access, so

- identity fails: ``viewer.layers[0] is viewer.layers[0]`` is False, and "is this layer one
  of the open baseline scans" is never true (the lung sample never made its crop);
- Qt refuses proxied objects: ``QMainWindow.resizeDocks([proxy, ...])`` raises "index 0 has
  type 'PublicOnlyProxy' but 'QDockWidget' is expected" (every run after the first added
  another pair of docks, widened the window and never enabled *Save*);
- every private attribute read becomes a FutureWarning notification.

A widget constructed directly in a test gets the viewer itself, which is why none of this
showed there. The widgets therefore keep the viewer itself (``real_viewer``) and use only
napari's public API on it; tests dock them the way napari does
(tests/test_plugin_real_paths.py).
"""

from __future__ import annotations

from typing import Any


def real_viewer(viewer: Any) -> Any:
    """The viewer behind napari's proxies (any depth); a plain viewer as it is."""
    seen = 0
    while seen < 8:
        try:
            inner = object.__getattribute__(viewer, "__wrapped__")
        except AttributeError:
            return viewer
        viewer, seen = inner, seen + 1
    return viewer
