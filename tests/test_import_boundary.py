"""The floors below the faces import no Qt and no napari (the package docstring and
DESIGN.md §4): every module of ``core``, ``science``, ``families``, ``datasets`` and
``engine`` is imported in a fresh interpreter, and after each import ``sys.modules`` must
hold no Qt binding, napari, magicgui or vispy (``core`` not even torch). Which floor may
import which is tests/test_floors.py's check.

One interpreter imports them one after the other and notes what each import added: a module
that pulls in Qt is named (the first one, if several do). 54 separate interpreters found the
same on this code but took 90 s on 2 cores, most of it importing torch and nnU-Net again
each time. A module of the napari face is imported last, as a check that the check sees Qt.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import napari_nacsim

PACKAGE = Path(napari_nacsim.__file__).resolve().parent
LAYERS = ("core", "families", "datasets", "engine", "science")
QT_AND_NAPARI = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui",
                 "vispy", "superqt")
CONTROL = "napari_nacsim.plugin.workspace"  # the what-if dock widget: Qt

CHECK = """
import importlib, json, sys
modules, watched = json.loads(sys.argv[1]), tuple(json.loads(sys.argv[2]))
seen, added, failed = set(), {}, {}
for name in modules:
    try:
        importlib.import_module(name)
    except Exception as exc:  # a module that cannot be imported at all is a failure too
        failed[name] = f"{type(exc).__name__}: {exc}"
    now = {m.split(".")[0] for m in sys.modules} & set(watched)
    added[name] = sorted(now - seen)
    seen |= now
print(json.dumps({"added": added, "failed": failed}))
"""


def _modules(layer: str) -> list[str]:
    """Every module of a layer, from its files (nothing is imported here)."""
    names = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_core_engine_and_science_import_no_qt_or_napari():
    modules = [m for layer in LAYERS if (PACKAGE / layer).is_dir() for m in _modules(layer)]
    assert len(modules) > 40 and "napari_nacsim.engine.whatif" in modules
    assert "napari_nacsim.science.segmentation.nnunet_trainers.nacsim_trainers" in modules
    watched = (*QT_AND_NAPARI, "torch")
    done = subprocess.run([sys.executable, "-c", CHECK, json.dumps([*modules, CONTROL]),
                           json.dumps(watched)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}
    added = report["added"]
    bad = {name: [m for m in added[name] if m in QT_AND_NAPARI] for name in modules}
    assert {name: found for name, found in bad.items() if found} == {}
    # core: not even torch (scans, schema and manifests are plain numpy)
    core = [name for name in modules if name.startswith("napari_nacsim.core")]
    assert core and not any(added[name] for name in core)
    # the check sees Qt where it is imported
    assert "qtpy" in added[CONTROL]
