"""Write files so that a reader never sees half of one.

Each file is written under a temporary name in the destination folder and renamed into
place (``os.replace`` is atomic within a filesystem); on any error the temporary is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    The temporary keeps the full suffix (e.g. ``.nii.gz``) because some writers pick the
    format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get normal permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; on success it replaces ``path`` (an
    existing folder there is moved aside, then removed once the new one is in place:
    callers decide whether overwriting is allowed). On any error the staging folder is
    removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs are shared data
    try:
        yield staging
        if not path.exists():
            os.replace(staging, path)
        else:
            # The old folder is moved aside, not deleted, until the new one is in place: a
            # failure between the two renames puts it back (deleting it first lost it).
            aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            moved = False
            try:
                os.replace(path, aside)   # onto an empty folder: allowed by rename(2)
                moved = True
                os.replace(staging, path)
            except BaseException:
                if moved:
                    os.replace(aside, path)
                raise
            finally:
                shutil.rmtree(aside, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def require_writable(path: str | os.PathLike) -> None:
    """Refuse (with `InputError`) an output that cannot be written, before any work starts.

    ``path`` is an output file or folder, existing or not. Where it (or the nearest existing
    folder above it, since missing folders are created) cannot receive files, the problem is
    reported now rather than as a PermissionError after a long run. The test is a real one:
    a temporary file is created there and removed (permission bits alone do not tell, e.g.
    on read-only mounts or for root).
    """
    from .errors import InputError

    path = Path(path)
    if path.is_dir():
        where = path
    else:
        where = path.parent
        while not where.exists() and where != where.parent:
            where = where.parent
        if not where.is_dir():
            raise InputError(path, f"cannot be written: {where} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as err:
        raise InputError(path, f"cannot be written: no files can be created in {where} "
                               f"({err.strerror or type(err).__name__})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_jsonable) + "\n")
    return Path(path)


def _jsonable(value: Any):
    """json.dumps fallback for numpy scalars/arrays and paths."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
