"""How a command ends when it fails: one line on stderr and an exit status, not a traceback.

Bad input (`InputError`: a file or field and what is wrong with it) ends with status 2; a
read or write that fails (`OSError`: a full disk, a quota, a lost mount) with status 1. The
training entrypoints (``training/train_nac.py``, ``train_lung.py``, ``train_segmenter.py``)
run their work through `run_command`. A run whose checkpoints are written atomically also
says that the last one is intact and that the same command resumes from it.
"""

from __future__ import annotations

import sys
from typing import Callable

from ..core.errors import InputError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1  # the machine failed the command (a full disk), not its input
RESUMES = "the last checkpoint is intact: run the same command again to resume"


def os_error_line(err: OSError) -> str:
    """"out/state: No space left on device": the file, if known, and what went wrong."""
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}"


def run_command(prog: str, run: Callable[[], int], *, resumable: bool = False) -> int:
    """``run()``'s exit status; bad input and a failed read or write end it with one line
    ``"<prog>: error: ..."`` on stderr. ``resumable``: the command writes its checkpoints
    atomically and resumes from the last one (the line says so). Any other exception is a
    bug and keeps its traceback."""
    try:
        return run()
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        hint = f" ({RESUMES})" if resumable else ""
        print(f"{prog}: error: {os_error_line(err)}{hint}", file=sys.stderr)
        return EXIT_FAILED
