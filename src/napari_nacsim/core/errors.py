"""The one exception type for bad input.

Every problem with a user's files or values is raised as `InputError` whose message is a
single line naming the file or field and the problem. The CLI prints it and exits non-zero;
the napari face shows it as a notification. Anything else escaping is a bug in nacsim.
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input. ``str(err)`` is one line: ``"<subject>: <problem>"``."""

    def __init__(self, subject: str | os.PathLike, problem: str):
        self.subject = str(subject)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(f"{self.subject}: {self.problem}")
