"""With fresh napari settings, a .nii opened first (before any nacsim widget) opens with
nacsim's reader, without napari's reader chooser (issue 24, item 8): the set-up records the
choice once, as napari's own "remember" check box would, never over the user's choice."""

from __future__ import annotations

import os
import subprocess
import sys


def _python(code: str, config) -> str:
    env = {**os.environ, "NAPARI_CONFIG": str(config)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True, timeout=600).stdout.strip()


CHOICE = ("from napari.settings import get_settings; "
          "print(get_settings().plugins.extension2reader.get('*.nii.gz'))")


def test_setup_step_makes_nacsim_the_nifti_reader_in_fresh_settings(tmp_path):
    config = tmp_path / "settings.yaml"
    assert _python(CHOICE, config) == "None"           # fresh: napari would ask
    env = {**os.environ, "NAPARI_CONFIG": str(config)}
    subprocess.run([sys.executable, "-m", "napari_nacsim.plugin.reader_choice"], env=env,
                   check=True, timeout=600, capture_output=True)
    assert _python(CHOICE, config) == "nacsim"          # saved: the next napari reads it


def test_setup_step_keeps_the_users_choice(tmp_path):
    config = tmp_path / "settings.yaml"
    _python("from napari.settings import get_settings; s = get_settings().plugins; "
            "s.extension2reader = {'*.nii.gz': 'other-plugin'}", config)
    env = {**os.environ, "NAPARI_CONFIG": str(config)}
    subprocess.run([sys.executable, "-m", "napari_nacsim.plugin.reader_choice"], env=env,
                   check=True, timeout=600, capture_output=True)
    assert _python(CHOICE, config) == "other-plugin"
