"""How a command ends when it fails: one line on stderr and an exit status, not a traceback.

Bad input (`InputError`: a file or field and what is wrong with it) ends with status 2; a
read or write that fails (`OSError`: a full disk, a quota, a lost mount) with status 1, and
on a full disk the line says to free some space; Ctrl-C with status 130. `nacsim` and the
scripts under ``training/`` run their work through `run_command`. A command whose outputs
are written atomically says that nothing was left half-written; one whose checkpoints are
says that the last one is intact and that the same command resumes from it.
"""

from __future__ import annotations

import errno
import sys
from typing import Callable

from ..core.errors import InputError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1  # the machine failed the command (a full disk), not its input
EXIT_INTERRUPTED = 130  # the shell's status for a command ended by SIGINT
RESUMES = "the last checkpoint is intact; run the same command again to resume"


def os_error_line(err: OSError, *, atomic: bool = False, resumable: bool = False) -> str:
    """"out/m.nii.gz: No space left on device (...)": the file, if known, what went wrong,
    and what the user can do about it. ``atomic``: the command's outputs are written
    atomically; ``resumable``: its checkpoints are, and it resumes from the last one."""
    where = f"{err.filename}: " if err.filename else ""
    what = err.strerror or str(err) or type(err).__name__
    full = err.errno in (errno.ENOSPC, errno.EDQUOT)
    if not (full or resumable):
        return f"{where}{what}"
    again = "run the same command again to resume" if resumable else "run it again"
    if full:
        again = f"free some space and {again}"
    kept = ("the last checkpoint is intact" if resumable
            else "nothing was left half-written" if atomic else None)
    return f"{where}{what} ({f'{kept}; {again}' if kept else again})"


def run_command(prog: str, run: Callable[[], int], *, atomic: bool = False,
                resumable: bool = False) -> int:
    """``run()``'s exit status; bad input, a failed read or write and Ctrl-C end it with one
    line ``"<prog>: ..."`` on stderr (`os_error_line` for ``atomic`` and ``resumable``). Any
    other exception is a bug and keeps its traceback."""
    try:
        return run()
    except InputError as err:
        _close_progress_bars()
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _close_progress_bars()
        print(f"{prog}: interrupted" + (f" ({RESUMES})" if resumable else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:
        _close_progress_bars()
        print(f"{prog}: error: {os_error_line(err, atomic=atomic, resumable=resumable)}",
              file=sys.stderr)
        return EXIT_FAILED


def _close_progress_bars() -> None:
    """A command that fails mid-way leaves its progress bar drawn: clear it, so that the
    error is the only line left."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or []):
        bar.leave = False
        bar.close()
