"""Permissions of what the atomic writers leave behind: a file gets 0o666 and a folder 0o777,
less the process umask, as if written in place (mkstemp and mkdtemp create 0600 / 0700,
which would hide outputs from the group or from a service reading them). A file or folder
that replaces an existing one gets the same mode as a new one, whatever the old one had.

Each test runs under three umasks set here and restored; the expected modes are written
out, not recomputed, so that a changed constant or operator in atomic.py shows."""

from __future__ import annotations

import os
import stat

import pytest

from napari_nacsim.core.atomic import atomic_directory, atomic_path, write_json_atomic

# umask -> (file mode, folder mode)
EXPECTED = {
    0o022: (0o644, 0o755),
    0o002: (0o664, 0o775),
    0o077: (0o600, 0o700),
}


@pytest.fixture(params=sorted(EXPECTED), ids=lambda m: f"umask{m:04o}")
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_new_file_gets_0o666_less_the_umask(tmp_path, umask):
    file_mode, _ = EXPECTED[umask]
    write_json_atomic(tmp_path / "report.json", {"x": 1})
    with atomic_path(tmp_path / "scan.nii.gz") as tmp:
        assert mode(tmp) == file_mode      # already while the writer fills it
        tmp.write_bytes(b"data")
    assert mode(tmp_path / "report.json") == file_mode
    assert mode(tmp_path / "scan.nii.gz") == file_mode
    assert current_umask() == umask        # reading the umask left it as it was


def test_a_replaced_file_gets_the_mode_of_a_new_one(tmp_path, umask):
    file_mode, _ = EXPECTED[umask]
    path = tmp_path / "report.json"
    path.write_text("old")
    os.chmod(path, 0o751)                  # a mode no umask here produces
    write_json_atomic(path, {"x": 2})
    assert mode(path) == file_mode and path.read_text() == '{\n  "x": 2\n}\n'


def test_a_new_folder_gets_0o777_less_the_umask(tmp_path, umask):
    file_mode, folder_mode = EXPECTED[umask]
    out = tmp_path / "run"
    with atomic_directory(out) as staging:
        assert mode(staging) == folder_mode
        write_json_atomic(staging / "report.json", {"x": 1})
    assert mode(out) == folder_mode
    assert mode(out / "report.json") == file_mode
    assert current_umask() == umask


def test_a_replaced_folder_gets_the_mode_of_a_new_one(tmp_path, umask):
    _, folder_mode = EXPECTED[umask]
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    os.chmod(out, 0o751)
    with atomic_directory(out) as staging:
        (staging / "new.txt").write_text("new")
    assert mode(out) == folder_mode
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
