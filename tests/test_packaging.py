"""The top-level napari.yaml is the single manifest, found by npe2 in an editable install
and shipped inside the built wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_manifest_is_the_top_level_file():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("nacsim")
    top = yaml.safe_load((ROOT / "napari.yaml").read_text())
    assert manifest.name == top["name"] == "nacsim"
    import napari_nacsim

    packaged = Path(napari_nacsim.__file__).parent / "napari.yaml"
    assert packaged.resolve() == (ROOT / "napari.yaml").resolve()


def test_wheel_ships_the_manifest_and_entry_points(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True)
    (wheel,) = tmp_path.glob("nacsim-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("napari_nacsim/napari.yaml") == (ROOT / "napari.yaml").read_bytes()
        entry_points = next(n for n in zf.namelist() if n.endswith("entry_points.txt"))
        text = zf.read(entry_points).decode()
    assert "[napari.manifest]\nnacsim = napari_nacsim:napari.yaml" in text
    assert "nacsim = napari_nacsim.cli.main:main" in text


def test_npe2_validate_passes():
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run([str(npe2), "validate", "nacsim"], capture_output=True,
                            encoding="utf-8", errors="replace")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout
