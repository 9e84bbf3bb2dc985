"""A write that fails midway (a full disk, a quota) ends in one line naming the file, exit
status 1, and leaves nothing half-written (issue 24, item 10)."""

from __future__ import annotations

import errno

import numpy as np

from napari_nacsim.cli.main import main
from napari_nacsim.core.scan import IMAGE, Scan, affine_from_spacing
from napari_nacsim.core.scan_io import write_scan


def _volumes(folder):
    rng = np.random.default_rng(0)
    affine = affine_from_spacing([2.0, 1.0, 1.0])
    pre = rng.random((6, 32, 32)).astype(np.float32)
    post = pre + 0.5 * rng.random((6, 32, 32)).astype(np.float32)
    return [write_scan(Scan(array=a, affine=affine, kind=IMAGE), folder / f"{n}.nii.gz")
            for n, a in (("pre", pre), ("post", post))]


def test_disk_full_midway_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    pre, post = _volumes(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    import nibabel

    real_save = nibabel.save

    def half_then_full(img, filename, *args, **kwargs):
        real_save(img, filename, *args, **kwargs)       # bytes reach the disk ...
        with open(filename, "r+b") as handle:            # ... then the disk fills up
            handle.truncate(100)
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(nibabel, "save", half_then_full)
    out = out_dir / "mip.nii.gz"
    code = main(["mip", "--pre", str(pre), "--post", str(post), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("nacsim: error: ") and "No space left on device" in err
    assert "mip" in err                                   # names the file it was writing
    assert list(out_dir.iterdir()) == []                  # nothing half-written


def test_quota_exceeded_is_one_line_too(tmp_path, monkeypatch, capsys):
    pre, post = _volumes(tmp_path)
    import nibabel

    def quota(img, filename, *args, **kwargs):
        raise OSError(errno.EDQUOT, "Disk quota exceeded", str(filename))

    monkeypatch.setattr(nibabel, "save", quota)
    code = main(["mip", "--pre", str(pre), "--post", str(post),
                 "--out", str(tmp_path / "m.nii.gz")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "Disk quota exceeded" in err
    assert not (tmp_path / "m.nii.gz").exists()
