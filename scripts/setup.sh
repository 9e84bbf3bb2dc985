#!/usr/bin/env bash
# One-shot set-up used by `make demo` and `make test` (and CI): system packages for a
# headless Qt/OpenGL viewer, then a virtual environment with nacsim installed.
#   scripts/setup.sh            -> runtime install (napari with PyQt6, napari's default)
#   scripts/setup.sh testing    -> + pytest, pytest-qt (and dicom3tools: dciodvfy)
# Re-running is cheap: nothing is reinstalled unless pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRA="${1:-qt}"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

# --- system packages (Debian/Ubuntu): Xvfb and the X/GL libraries Qt needs -------------------
SYS_PKGS="xvfb xauth libgl1 libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 \
libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 \
libxcb-shape0 libxcb-cursor0 libfontconfig1 libdbus-1-3"
# testing: dicom3tools' dciodvfy, the independent validator of the DICOM export tests
if [ "$EXTRA" = "testing" ]; then SYS_PKGS="$SYS_PKGS dicom3tools"; fi
if command -v apt-get >/dev/null 2>&1; then
  missing=""
  for pkg in $SYS_PKGS; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing system packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

# --- Python environment -----------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.nacsim-installed-$EXTRA"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch/torchvision first, as an exact pair (see DESIGN.md: open_clip needs matching builds).
  "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  "$VENV/bin/python" -m pip install -q -e ".[$EXTRA]"
  # An environment made before the move to PyQt6 still has PyQt5: qtpy would pick it (and
  # napari warns that PyQt5 is deprecated), so it goes once PyQt6 is in.
  if "$VENV/bin/python" -c "import PyQt6.QtCore" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip uninstall -q -y PyQt5 PyQt5-Qt5 PyQt5-sip >/dev/null 2>&1 || true
  fi
  touch "$stamp"
fi
# napari opens NIfTI and DICOM files with nacsim's reader without asking, even before nacsim's first use
# (never over a reader the user chose; src/napari_nacsim/plugin/reader_choice.py)
"$VENV/bin/python" -m napari_nacsim.plugin.reader_choice || true
