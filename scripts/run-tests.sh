#!/usr/bin/env bash
# Run the test suite; without a display, under a virtual X server (napari needs OpenGL).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-xcb}"
export PYTHONUTF8=1  # UTF-8 I/O even where the locale is plain ASCII (CI containers)
# The binding napari recommends (our `qt`/`testing` extras): with PyQt5 still installed too
# (an older environment), qtpy would otherwise pick PyQt5.
if [ -z "${QT_API:-}" ] && "$VENV/bin/python" -c "import PyQt6.QtCore" >/dev/null 2>&1; then
  export QT_API=pyqt6
fi
# nnU-Net and ITK: stay within the 2 cores of a laptop/CI machine.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null 2>&1; then
  exec xvfb-run -a -s "-screen 0 1600x1000x24" "$VENV/bin/python" -m pytest "$@"
fi
exec "$VENV/bin/python" -m pytest "$@"
